"""The worker: jobs fire on a fast schedule, overlaps are skipped, missed runs are caught up once, the HTTP
endpoint answers, bad schedules are refused, and a real process stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dr.errors import ConfigError, Interrupted
from dr.metrics import Metrics
from dr.scheduler import JobSpec, Worker, make_trigger

ROOT = Path(__file__).parents[2]
UTC_TZ = ZoneInfo("UTC")


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def test_jobs_fire_on_a_fast_schedule() -> None:
    fired: list[float] = []
    results = iter([0, 1, 3] + [0] * 100)

    def job() -> int:
        fired.append(time.monotonic())
        return next(results)

    metrics = Metrics()
    worker = Worker({"backup": JobSpec("backup", job, interval_seconds=0.2)}, UTC_TZ, metrics=metrics)
    worker.start()
    try:
        wait_for(lambda: len(fired) >= 4)
    finally:
        assert worker.stop(grace_seconds=5) == 0
    assert sample(metrics, "jdr_worker_job_runs_total", job="backup", result="ok") >= 2  # type: ignore[operator]
    assert sample(metrics, "jdr_worker_job_runs_total", job="backup", result="partial") == 1
    assert sample(metrics, "jdr_worker_job_runs_total", job="backup", result="failed") == 1
    n = len(fired)
    time.sleep(0.5)
    assert len(fired) == n  # nothing fires after stop


def test_overlapping_run_is_skipped_not_doubled(caplog: pytest.LogCaptureFixture) -> None:
    active = 0
    peak = 0
    runs = 0
    lock = threading.Lock()

    def slow() -> int:
        nonlocal active, peak, runs
        with lock:
            active += 1
            runs += 1
            peak = max(peak, active)
        time.sleep(1.0)
        with lock:
            active -= 1
        return 0

    metrics = Metrics()
    worker = Worker({"backup": JobSpec("backup", slow, interval_seconds=0.25)}, UTC_TZ, metrics=metrics)
    with caplog.at_level("WARNING", logger="dr.scheduler.worker"):
        worker.start()
        try:
            wait_for(lambda: (sample(metrics, "jdr_worker_skipped_runs_total", job="backup") or 0) >= 2)
            assert peak == 1
        finally:
            worker.stop(grace_seconds=5)
    assert peak == 1
    assert "job backup skipped: its previous run" in caplog.text
    _, report = worker.health_report()
    assert report["jobs"]["backup"]["skipped"] >= 2


def test_job_errors_become_exit_codes() -> None:
    def interrupted() -> int:
        raise Interrupted("stopped")

    def crashing() -> int:
        raise RuntimeError("boom")

    worker = Worker({"a": JobSpec("a", interrupted, interval_seconds=0.1),
                     "b": JobSpec("b", crashing, interval_seconds=0.1)}, UTC_TZ)
    worker.start()
    try:
        wait_for(lambda: all(worker.health_report()[1]["jobs"][j]["last"] for j in "ab"))
    finally:
        worker.stop(1)
    jobs = worker.health_report()[1]["jobs"]
    assert jobs["a"]["last"]["exit_code"] == 3 and jobs["a"]["last"]["error"] == "stopped"
    assert jobs["b"]["last"]["exit_code"] == 3 and "RuntimeError: boom" in jobs["b"]["last"]["error"]


def test_health_and_metrics_endpoints() -> None:
    done = threading.Event()

    def job() -> int:
        done.set()
        return 0

    jobs = {"backup": JobSpec("backup", job, interval_seconds=0.2),
            "drill": JobSpec("drill", lambda: 0, cron="0 5 1 */3 *")}
    worker = Worker(jobs, ZoneInfo("Europe/Berlin"), health_port=0)
    worker.start()
    try:
        assert done.wait(5)
        wait_for(lambda: worker.health_report()[1]["jobs"]["backup"]["last"] is not None)
        address = worker.health_address
        assert address is not None and address[0] == "127.0.0.1"
        base = f"http://127.0.0.1:{address[1]}"
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200
            doc = json.loads(r.read())
        assert doc["status"] == "ok" and doc["timezone"] == "Europe/Berlin"
        assert doc["jobs"]["backup"]["last"]["exit_code"] == 0
        drill_next = datetime.fromisoformat(doc["jobs"]["drill"]["next_run"].replace("Z", "+00:00"))
        local = drill_next.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.day, local.hour, local.minute, local.month % 3) == (1, 5, 0, 1)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            names = {s.name for f in text_string_to_metric_families(r.read().decode()) for s in f.samples}
        assert "jdr_worker_job_runs_total" in names and "jdr_build_info" in names
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert e.value.code == 404
        worker.stop_requested.set()  # shutting down: unhealthy
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert e.value.code == 503
    finally:
        worker.stop(grace_seconds=2)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/healthz", timeout=2)


@pytest.mark.parametrize(("expr", "fragment"), [
    ("61 * * * *", "'61'"),
    ("* * *", "Wrong number of fields"),
    ("0 2 * * funday", "funday"),
    ("@fortnightly", "@fortnightly"),
])
def test_bad_cron_is_a_config_error_naming_the_job(expr: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        Worker({"prune": JobSpec("prune", lambda: 0, cron=expr)}, UTC_TZ)
    assert "schedule.prune" in str(e.value) and fragment in str(e.value)
    assert e.value.exit_code == 2 and e.value.hint


def test_cron_reads_days_of_week_like_cron_and_in_the_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    weekdays = make_trigger(JobSpec("b", lambda: 0, cron="0 2 * * 1-5"), berlin)
    fire = weekdays.get_next_fire_time(None, saturday)
    assert fire == datetime(2026, 11, 30, 2, tzinfo=berlin)  # Monday 02:00 in Berlin = 01:00Z
    sunday = make_trigger(JobSpec("b", lambda: 0, cron="30 3 * * 0"), UTC_TZ)
    assert sunday.get_next_fire_time(None, saturday).strftime("%a %H:%M") == "Sun 03:30"
    daily = make_trigger(JobSpec("b", lambda: 0, cron="@daily"), UTC_TZ)
    assert daily.get_next_fire_time(None, saturday) == datetime(2026, 11, 29, tzinfo=UTC)
    every = make_trigger(JobSpec("b", lambda: 0, cron="@every 1m30s"), UTC_TZ)
    assert every.interval == timedelta(seconds=90)


def fires(cron: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[str]:
    """Fire times (UTC) in [start, end), asked as APScheduler's loop asks: after each fire, just after it."""
    trigger = make_trigger(JobSpec("b", lambda: 0, cron=cron), tz)
    prev, now, out = None, start.astimezone(tz), []
    while (nxt := trigger.get_next_fire_time(prev, now)) is not None and nxt < end:
        out.append(nxt.astimezone(UTC).strftime("%m-%d %H:%M"))
        prev, now = nxt, (nxt.astimezone(UTC) + timedelta(microseconds=1)).astimezone(tz)
    return out


def test_a_job_at_a_fixed_hour_runs_once_when_summer_time_ends_and_hourly_jobs_run_every_hour() -> None:
    # cron's rule: at fixed hours, the repeated hour (02:00-03:00 twice on 2026-10-25 in Berlin) runs once;
    # jobs on every hour run in both. APScheduler alone ran the 02:00 backup twice (found by tests/season).
    berlin = ZoneInfo("Europe/Berlin")
    start, end = datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC)
    assert fires("0 2 * * *", berlin, start, end) == ["10-24 00:00", "10-25 00:00", "10-26 01:00"]
    assert fires("30 2 * * *", berlin, start, end) == ["10-24 00:30", "10-25 00:30", "10-26 01:30"]
    hourly = fires("15 * * * *", berlin, datetime(2026, 10, 24, 23, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC))
    assert hourly == ["10-24 23:15", "10-25 00:15", "10-25 01:15", "10-25 02:15"]  # 02:15 CEST and CET both
    # spring forward: 02:00 does not exist on 2026-03-29; the job runs once, at 03:00 CEST (01:00Z)
    spring = fires("0 2 * * *", berlin, datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert spring == ["03-28 01:00", "03-29 01:00", "03-30 00:00"]


def test_runs_missed_while_down_are_caught_up_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "worker-state.json"
    now = datetime.now(UTC)
    # A yearly job that last ran well over a year ago: several runs were missed; exactly one catches up.
    state.write_text(json.dumps({"last_started": {"yearly": (now - timedelta(days=800)).isoformat()}}))
    fired: list[datetime] = []
    job = JobSpec("yearly", lambda: fired.append(datetime.now(UTC)) or 0, cron="0 0 1 1 *")  # type: ignore[func-returns-value]
    worker = Worker({"yearly": job}, UTC_TZ, misfire_grace_seconds=400 * 86400, state_path=state)
    with caplog.at_level("INFO", logger="dr.scheduler.worker"):
        worker.start()
        try:
            wait_for(lambda: len(fired) == 1, timeout=5)
            time.sleep(0.5)
        finally:
            worker.stop(2)
    assert len(fired) == 1
    assert "missed its run at" in caplog.text and "running it now, once" in caplog.text
    recorded = json.loads(state.read_text())["last_started"]["yearly"]
    assert datetime.fromisoformat(recorded.replace("Z", "+00:00")) >= now

    # Restarted now: nothing was missed since, so nothing runs.
    worker = Worker({"yearly": job}, UTC_TZ, misfire_grace_seconds=400 * 86400, state_path=state)
    worker.start()
    time.sleep(0.7)
    worker.stop(2)
    assert len(fired) == 1

    # Missed, but longer ago than the grace: skipped with a warning.
    state.write_text(json.dumps({"last_started": {"yearly": (now - timedelta(days=800)).isoformat()}}))
    caplog.clear()
    worker = Worker({"yearly": job}, UTC_TZ, misfire_grace_seconds=3600, state_path=state)
    with caplog.at_level("INFO", logger="dr.scheduler.worker"):
        worker.start()
        time.sleep(0.7)
        worker.stop(2)
    assert len(fired) == 1
    assert "more than the 3600s grace" in caplog.text


# --- a real process and real signals ------------------------------------------------------------------

WORKER_SCRIPT = """
import logging, sys, time
from zoneinfo import ZoneInfo
from dr.errors import Interrupted
from dr.scheduler import JobSpec, Worker

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
cooperative = sys.argv[1] == "cooperative"
worker = None

def slow():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cooperative and worker.stop_requested.is_set():
            time.sleep(0.3)  # tidy up, then say honestly that the run did not finish
            raise Interrupted("backup stopped before committing its manifest")
        time.sleep(0.05)
    return 0

worker = Worker({"backup": JobSpec("backup", slow, interval_seconds=0.2)}, ZoneInfo("UTC"),
                health_port=0, grace_seconds=float(sys.argv[2]))
sys.exit(worker.run_forever())
"""


def run_worker(mode: str, grace: float) -> tuple[subprocess.Popen[str], list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, mode, str(grace)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if "job backup started" in line:
            return proc, lines
    raise AssertionError("the worker never started its job:\n" + "\n".join(lines))


def finish(proc: subprocess.Popen[str], lines: list[str], timeout: float) -> tuple[int, list[str], float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the worker did not stop in time:\n" + "\n".join(lines)) from None
    return proc.returncode, lines + err.splitlines(), time.monotonic() - started


def test_sigterm_lets_a_cooperative_job_stop_cleanly() -> None:
    proc, lines = run_worker("cooperative", grace=10)
    health = next(line for line in lines if "health endpoint listening on" in line)
    assert "http://127.0.0.1:" in health
    code, lines, took = finish(proc, lines, timeout=15)
    text = "\n".join(lines)
    assert code == 0, text
    assert took < 5, text
    assert "received SIGTERM: stopping" in text
    assert "waiting up to 10s for running job(s) to finish: backup" in text
    assert "job backup interrupted: backup stopped before committing its manifest" in text
    assert "job backup finished with exit code 3" in text and "(during shutdown)" in text
    assert "worker stopped" in text and "abandon" not in text
    assert text.count("job backup started") == 1  # not restarted while stopping


def test_sigterm_abandons_a_stuck_job_after_the_grace_period() -> None:
    proc, lines = run_worker("stubborn", grace=1)
    code, lines, took = finish(proc, lines, timeout=15)
    text = "\n".join(lines)
    assert code == 3, text
    assert 0.9 <= took < 5, text
    assert "received SIGTERM: stopping" in text
    assert "job backup still running after 1s" in text and "abandoning it" in text
    assert "worker stopped (a job was abandoned)" in text
    assert "job backup finished" not in text
