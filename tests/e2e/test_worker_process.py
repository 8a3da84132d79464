"""``jdr worker`` as a real process on a sandbox hub: /metrics on 127.0.0.1 by default, drill gauges from the
repository, a job locked out by another process gives up loudly (log, metric, webhook) and the next one
runs, every job start and end and the stopping signal logged — in JSON, because the YAML file says so."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.sandbox import JDR, Sandbox

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


class Hooks:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.received = threading.Event()


@pytest.fixture
def webhook() -> Iterator[tuple[str, Hooks]]:
    hooks = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hooks.bodies.append(json.loads(body))
            hooks.received.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", hooks
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(addr) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    found.add(addr)
    return found


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _wait(cond: Any, what: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the worker exited while waiting for {what}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_worker_process(make_sandbox: Any, tmp_path: Path, webhook: tuple[str, Hooks]) -> None:
    url, hooks = webhook
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    for user in sb.users:
        (sb.home(user) / "notebooks" / "work.ipynb").write_text(NOTEBOOK)
    port = _free_port()
    sb.write_config(metrics={"port": port}, log_format="json", notify={"webhook": url},
                    worker={"lock_wait": 2, "lock_retry_min": 1, "lock_retry_max": 1},
                    schedule={"backup": "@every 3s", "prune": "", "drill": ""})
    assert sb.run_jdr("backup").returncode == 0
    drill = sb.jdr_json("drill")
    drill_finished = drill["finished"]

    env = {k: v for k, v in sb.env.items() if k != "JDR_LOG_FORMAT"}  # the YAML file decides the format
    lock = sb.repo().lock("restore", exclusive=True)  # another process holds the repository
    lock.__enter__()
    proc = subprocess.Popen([JDR, "worker"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=sb.root)
    released = False
    try:
        assert hooks.received.wait(90), "no webhook: the locked-out job did not give up loudly"
        lock.__exit__(None, None, None)
        released = True
        event = hooks.bodies[0]
        assert event["event"] == "backup" and event["outcome"] == "failure"
        assert "stayed locked by another process" in event["summary"]

        assert _listening_addresses(port) == {"127.0.0.1"}  # not 0.0.0.0 unless configured
        metrics = _scrape(port)
        assert metrics[("jdr_worker_lock_timeouts_total", frozenset({("job", "backup")}))] >= 1
        assert metrics[("jdr_drill_last_success_timestamp_seconds", frozenset())] == pytest.approx(
            _epoch(drill_finished), abs=1e-3)  # from the repository's drill report, not from this process
        _wait(lambda: len(sb.jdr_json("list")) >= 2, "a backup once the lock was released", proc)
        after = _scrape(port)
        assert after[("jdr_backup_last_status", frozenset({("status", "complete")}))] == 1
    finally:
        if not released:
            lock.__exit__(None, None, None)
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records and len(records) == len([line for line in err.splitlines() if line.strip()]), err[-3000:]
    messages = [r["message"] for r in records]
    assert any(m == "job backup started" for m in messages)
    assert any(m.startswith("job backup finished with exit code 0") for m in messages)
    assert any(m.startswith("job backup failed:") and "stayed locked" in m for m in messages)
    assert any("gives up: the repository stayed locked" in m for m in messages)
    stopping = [m for m in messages if m.startswith("received SIGTERM: stopping")]
    assert stopping == ["received SIGTERM: stopping (running jobs get 80s to finish)"]  # < systemd's 90 s
    assert messages[-1].startswith("worker stopped")


def _epoch(text: str) -> float:
    from dr.util.timefmt import parse_iso

    return parse_iso(text).timestamp()


@pytest.mark.parametrize(("environ", "expected"), [({}, "127.0.0.1"), ({"JDR_METRICS_BIND": "0.0.0.0"}, "0.0.0.0")])
def test_metrics_bind_is_loopback_unless_configured(environ: dict[str, str], expected: str) -> None:
    from zoneinfo import ZoneInfo

    from dr.scheduler import JobSpec, Worker
    from dr.settings import load_settings

    settings = load_settings(None, environ=environ)
    worker = Worker({"backup": JobSpec("backup", lambda: 0, cron="@yearly")}, ZoneInfo("UTC"), health_port=0,
                    health_host=settings.metrics.bind)
    worker.start()
    try:
        assert worker.health_address is not None
        assert _listening_addresses(worker.health_address[1]) == {expected}
    finally:
        worker.stop(grace_seconds=1)
