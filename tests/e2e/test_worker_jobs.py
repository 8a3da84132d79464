"""The worker's jobs: one at a time (never locking each other out), and retrying — with back-off, within a
bounded window — when another process holds the repository lock. Driven by events, not sleeps."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dr.cli import jobs
from dr.cli.worker_cmd import make_attempt
from dr.errors import Interrupted, LockHeldError
from dr.metrics import Metrics
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.scheduler import JobSpec, Worker
from dr.scheduler.retry import LockRetry, LockWaitExpired, retry_while_locked
from dr.settings import Settings, load_settings
from tests.fixtures.sandbox import Sandbox

UTC = ZoneInfo("UTC")


def test_jobs_of_one_worker_run_one_after_the_other(caplog: pytest.LogCaptureFixture) -> None:
    release_backup = threading.Event()
    backup_running = threading.Event()
    prune_ran = threading.Event()
    active: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    order: list[str] = []
    guard = threading.Lock()

    def enter(name: str) -> None:
        with guard:
            active.append(name)
            order.append(name)
            if len(active) > 1:
                overlaps.append(tuple(active))

    def leave(name: str) -> None:
        with guard:
            active.remove(name)

    def backup() -> int:
        enter("backup")
        backup_running.set()
        assert release_backup.wait(20)
        leave("backup")
        return 0

    def prune() -> int:
        enter("prune")
        leave("prune")
        prune_ran.set()
        return 0

    worker = Worker({"backup": JobSpec("backup", backup, interval_seconds=3600),
                     "prune": JobSpec("prune", prune, interval_seconds=3600)}, UTC)
    with caplog.at_level("INFO", logger="dr.scheduler.worker"):
        worker.start()
        try:
            worker._scheduler.modify_job("backup", next_run_time=_now())
            assert backup_running.wait(10)
            worker._scheduler.modify_job("prune", next_run_time=_now())  # due while backup runs
            _wait(lambda: worker.health_report()[1]["jobs"]["prune"]["state"] == "waiting")
            assert not prune_ran.is_set()
            assert worker.health_report()[1]["jobs"]["backup"]["state"] == "running"
            release_backup.set()
            assert prune_ran.wait(10)
        finally:
            release_backup.set()
            assert worker.stop(grace_seconds=10) == 0
    assert overlaps == [] and order == ["backup", "prune"]
    assert "job prune waits: job backup is running" in caplog.text
    assert "job prune started" in caplog.text and "job prune finished with exit code 0" in caplog.text


def test_a_waiting_job_does_not_start_when_the_worker_stops(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    running = threading.Event()
    ran: list[str] = []

    def backup() -> int:
        running.set()
        release.wait(20)
        return 0

    worker = Worker({"backup": JobSpec("backup", backup, interval_seconds=3600),
                     "prune": JobSpec("prune", lambda: ran.append("prune") or 0, interval_seconds=3600)}, UTC)
    with caplog.at_level("INFO", logger="dr.scheduler.worker"):
        worker.start()
        worker._scheduler.modify_job("backup", next_run_time=_now())
        assert running.wait(10)
        worker._scheduler.modify_job("prune", next_run_time=_now())
        _wait(lambda: worker.health_report()[1]["jobs"]["prune"]["state"] == "waiting")
        stopper = threading.Thread(target=lambda: worker.stop(grace_seconds=20))
        stopper.start()
        _wait(lambda: "job prune not started: the worker is stopping" in caplog.text)
        release.set()
        stopper.join(20)
    assert ran == []


def test_backoff_delays_are_bounded_by_the_window() -> None:
    assert LockRetry(window=100, first=10, longest=30).delays() == [10, 20, 30, 30, 10]
    assert sum(LockRetry(window=3600, first=15, longest=300).delays()) == 3600
    assert LockRetry(window=0).delays() == []


def test_retry_gives_up_after_the_window_and_stops_when_asked() -> None:
    waits: list[float] = []
    attempts = 0

    def locked() -> int:
        nonlocal attempts
        attempts += 1
        raise LockHeldError("the repository is locked: backup by pid 4242 on elsewhere")

    with pytest.raises(LockWaitExpired) as e:
        retry_while_locked("prune", locked, LockRetry(window=7, first=1, longest=4),
                           wait=lambda d: waits.append(d) is not None)
    assert waits == [1, 2, 4] and attempts == 4
    assert "stayed locked by another process" in str(e.value) and "pid 4242" in str(e.value)
    assert e.value.exit_code == 3 and e.value.hint
    with pytest.raises(Interrupted):  # a stopping worker does not keep waiting
        retry_while_locked("prune", locked, LockRetry(window=7, first=1, longest=4), wait=lambda d: True)


def _settings(sb: Sandbox, **extra: Any) -> Settings:
    sb.write_config(**extra)
    return load_settings(sb.config, environ={})


def test_a_real_backup_waits_for_another_process_lock_then_runs(make_sandbox: Any, tmp_path: Path) -> None:
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    settings = _settings(sb, metrics={"textfile_dir": str(tmp_path / "textfile")})
    assert jobs.backup(settings).exit_code == 0
    held = sb.repo().lock("restore", exclusive=True)  # another process, as far as the job can tell
    held.__enter__()
    metrics = Metrics()
    waits: list[float] = []

    def wait(delay: float) -> bool:
        waits.append(delay)
        if len(waits) == 2:
            held.__exit__(None, None, None)  # the other process finishes during the second wait
        return False

    policy = LockRetry(window=600, first=5, longest=60)
    try:
        result = retry_while_locked("backup", lambda: jobs.backup(settings, metrics=metrics), policy, wait=wait)
    finally:
        if len(waits) < 2:
            held.__exit__(None, None, None)
    assert result.status == "complete" and waits == [5, 10]
    assert [r.status for r in (sb.repo().load_manifest(r) for r in sb.repo().run_ids())] == ["complete"] * 2
    # only the run that happened was published: no "failed" for the attempts that waited
    assert metrics.get("jdr_backup_last_status", status="complete") == 1


def test_a_job_that_stays_locked_out_gives_up_loudly(make_sandbox: Any, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    textfiles = tmp_path / "textfile"
    settings = _settings(sb, metrics={"textfile_dir": str(textfiles)})
    assert jobs.backup(settings).exit_code == 0
    metrics = Metrics()
    stop = threading.Event()
    attempt = make_attempt("backup", LockRetry(window=0.3, first=0.1, longest=0.1), stop, metrics)
    with sb.repo().lock("restore", exclusive=True), caplog.at_level("WARNING"), \
            pytest.raises(LockWaitExpired):
        jobs.backup(settings, metrics=metrics, attempt=attempt)
    assert metrics.get("jdr_worker_lock_retries_total", job="backup") == 3
    assert metrics.get("jdr_worker_lock_timeouts_total", job="backup") == 1
    assert metrics.get("jdr_backup_last_status", status="failed") == 1
    assert "gives up: the repository stayed locked" in caplog.text
    text = (textfiles / "jdr_backup.prom").read_text()
    assert 'jdr_backup_last_status{status="failed"} 1.0' in text
    assert "jdr_backup_last_success_timestamp_seconds" in text  # still known: read from the repository


def _now() -> Any:
    from datetime import UTC as _UTC
    from datetime import datetime

    return datetime.now(_UTC)


def _wait(cond: Any, timeout: float = 10.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not cond():
            if done.wait(0.02):
                raise AssertionError("condition not met in time")
    finally:
        deadline.cancel()


def test_the_copy_job_is_off_by_default_and_runs_like_the_others(make_sandbox: Any, tmp_path: Path) -> None:
    from dr.cli.worker_cmd import make_jobs

    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    assert "copy" not in make_jobs(_settings(sb), Metrics(), threading.Event())
    textfiles = tmp_path / "textfile"
    settings = _settings(sb, copy={"to": f"file://{tmp_path / 'second'}"}, schedule={"copy": "0 4 * * *"},
                         metrics={"textfile_dir": str(textfiles)})
    metrics = Metrics()
    found = make_jobs(settings, metrics, threading.Event())
    assert set(found) == {"backup", "prune", "drill", "copy"}
    assert found["backup"]() == 0
    assert found["copy"]() == 0  # the worker's job: the same call as `jdr copy`, with its metrics
    assert sb.repo().run_ids() == Repository.open(FileStore.from_url(f"file://{tmp_path / 'second'}")).run_ids()
    assert metrics.get("jdr_copy_last_status", status="complete") == 1
    assert metrics.get("jdr_copy_runs_missing") == 0
    assert "jdr_copy_last_success_timestamp_seconds" in (textfiles / "jdr_copy.prom").read_text()


def test_a_one_shot_command_waits_for_the_lock_only_when_asked(make_sandbox: Any, tmp_path: Path) -> None:
    # A CronJob's `jdr prune --wait-for-lock 1h` that meets another process's lock retries (the worker's
    # back-off) and runs once the lock is free; without the option it fails at once (exit 3).
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    sb.write_config(worker={"lock_retry_min": 1, "lock_retry_max": 1})
    sb.jdr_json("backup")
    bad = sb.run_jdr("prune", "--wait-for-lock", "5m")
    assert bad.returncode == 2 and "'5m' is not a duration" in bad.stderr, bad.stderr
    held = sb.repo().lock("restore", exclusive=True)
    held.__enter__()
    try:
        at_once = sb.run_jdr("prune")
        assert at_once.returncode == 3 and "lock" in at_once.stderr, at_once.stderr
        proc = sb.start_jdr("prune", "--wait-for-lock", "2min")
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the retry is announced before the wait: then the other process ends
            seen.append(line)
            if "is locked by another process" in line and "retrying in 1s" in line:
                break
        else:
            raise AssertionError(f"prune never said it waits (exit {proc.wait()}): {''.join(seen)}")
    finally:
        held.__exit__(None, None, None)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + err
    assert "KEEP" in out
