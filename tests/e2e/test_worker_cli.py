"""``jdr worker`` as an administrator runs it: a real process on a sandbox hub, fired on a fast schedule,
scraped over HTTP, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dr.operations.sandbox import create_sandbox

JDR = str(Path(sys.executable).with_name("jdr"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_worker_backs_up_on_schedule_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    sb = create_sandbox(tmp_path / "hub", users=("alice", "bob"))
    port = _free_port()
    config = tmp_path / "jdr.yaml"
    config.write_text(sb.config_text() + (
        'schedule: {backup: "@every 2s", prune: "", drill: "", timezone: Europe/Berlin}\n'
        f"metrics: {{port: {port}, bind: 127.0.0.1}}\n"))
    env = {**os.environ, "JDR_CONFIG": str(config), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen([JDR, "-v", "worker", "--grace", "30"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        runs: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            listing = subprocess.run([JDR, "--json", "list"], env=env, capture_output=True, text=True)
            if listing.returncode == 0:
                runs = json.loads(listing.stdout)
                if len(runs) >= 2:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.5)
        assert len(runs) >= 2, "the worker did not run two backups within a minute"
        assert all(r["status"] == "complete" for r in runs)

        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        health = json.loads(body)
        assert "backup" in json.dumps(health)

        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        last_success = families["jdr_backup_last_success_timestamp_seconds"].samples[0].value
        assert abs(time.time() - last_success) < 120
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
