"""Metrics: rendered and parsed back with the Prometheus client's parser; textfile; a real Pushgateway-like
HTTP server on loopback receiving the push."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dr.metrics import (
    METRIC_NAMES,
    METRICS,
    BackupMetrics,
    CopyMetrics,
    DrillMetrics,
    ItemMetrics,
    Metrics,
    PruneMetrics,
    RepositoryMetrics,
)

ALERTS_YAML = Path(__file__).parents[2] / "docs" / "alerts.yaml"

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def backup(status: str = "partial", alice: str = "ok", start: datetime = T0) -> BackupMetrics:
    return BackupMetrics(
        run="20261125T020000Z-abcdef", started=start, finished=start + timedelta(seconds=95),
        status=status, bytes_read=5000, bytes_stored=1200, files=42,  # type: ignore[arg-type]
        items=[ItemMetrics("alice", "", alice, 3000, 1000, 30, 12.5),  # type: ignore[arg-type]
               ItemMetrics("bob@example.com", "gpu", "failed"),
               ItemMetrics("carol", "", "skipped")],
        hub_ok=True, hub_bytes_stored=200)


def test_backup_metrics_render_and_parse() -> None:
    m = Metrics()
    m.record_backup(backup())
    text = m.render().decode()
    finished = (T0 + timedelta(seconds=95)).timestamp()
    assert value(text, "jdr_backup_last_run_timestamp_seconds") == finished
    # partial: the run is not a success, but alice's volume and the hub are. What is not known (the last
    # complete run, bob's last success) is absent, never 0.
    assert ("jdr_backup_last_success_timestamp_seconds", frozenset()) not in samples(text)
    assert value(text, "jdr_volume_last_success_timestamp_seconds", user="alice", server="") == finished
    assert ("jdr_volume_last_success_timestamp_seconds",
            frozenset({("user", "bob@example.com"), ("server", "gpu")})) not in samples(text)
    assert value(text, "jdr_hub_last_success_timestamp_seconds") == finished
    assert value(text, "jdr_backup_last_duration_seconds") == 95
    assert value(text, "jdr_backup_last_read_bytes") == 5000
    assert value(text, "jdr_backup_last_stored_bytes") == 1200
    assert value(text, "jdr_backup_last_files") == 42
    assert value(text, "jdr_backup_last_failures") == 1
    assert value(text, "jdr_backup_last_status", status="partial") == 1
    assert value(text, "jdr_backup_last_status", status="complete") == 0
    assert value(text, "jdr_backup_runs_total", status="partial") == 1
    assert value(text, "jdr_backup_read_bytes_total") == 5000
    assert value(text, "jdr_volume_last_read_bytes", user="alice", server="") == 3000
    assert value(text, "jdr_volume_last_duration_seconds", user="alice", server="") == 12.5
    assert value(text, "jdr_volume_consecutive_failures", user="bob@example.com", server="gpu") == 1
    assert value(text, "jdr_volume_failures_total", user="bob@example.com", server="gpu") == 1
    # a skipped item leaves no series
    assert not any(("user", "carol") in labels for _, labels in samples(text))
    kinds = families(text)
    assert kinds["jdr_backup_read_bytes"] == "counter"  # the parser strips _total from counter families
    assert kinds["jdr_backup_last_read_bytes"] == "gauge"


def test_counters_accumulate_and_consecutive_failures_reset() -> None:
    m = Metrics()
    m.record_backup(backup(alice="failed"))
    m.record_backup(backup(alice="failed", start=T0 + timedelta(days=1)))
    text = m.render().decode()
    assert value(text, "jdr_volume_consecutive_failures", user="alice", server="") == 2
    assert value(text, "jdr_backup_read_bytes_total") == 10000
    assert value(text, "jdr_backup_failures_total") == 4
    m.record_backup(backup(status="complete", start=T0 + timedelta(days=2)))
    text = m.render().decode()
    assert value(text, "jdr_volume_consecutive_failures", user="alice", server="") == 0
    assert value(text, "jdr_backup_last_success_timestamp_seconds") == (
        T0 + timedelta(days=2, seconds=95)).timestamp()
    assert value(text, "jdr_backup_runs_total", status="partial") == 2
    assert value(text, "jdr_backup_runs_total", status="complete") == 1


def test_caller_known_consecutive_failures_win() -> None:
    m = Metrics()
    b = backup()
    items = [ItemMetrics("dave", "", "failed", consecutive_failures=3)]
    m.record_backup(BackupMetrics(b.run, b.started, b.finished, "partial", items=items))
    assert value(m.render().decode(), "jdr_volume_consecutive_failures", user="dave", server="") == 3


def test_prune_drill_repository_and_worker_metrics() -> None:
    m = Metrics()
    m.record_prune(PruneMetrics(T0, T0 + timedelta(seconds=4), True, runs_deleted=3, runs_kept=10,
                                artifacts_deleted=7, bytes_freed=12345, snapshots_deleted=2))
    m.record_drill(DrillMetrics(T0, T0 + timedelta(minutes=10), True, rto_seconds=600.5,
                                rpo_seconds=3600 * 5, failures=0, run="r"))
    m.record_repository(RepositoryMetrics(size_bytes=10**9, runs=12))
    m.record_job("backup", 1, T0, T0 + timedelta(seconds=3))
    m.record_skipped("backup")
    text = m.render().decode()
    assert value(text, "jdr_prune_runs_deleted_total") == 3
    assert value(text, "jdr_prune_artifacts_deleted_total") == 7
    assert value(text, "jdr_prune_freed_bytes_total") == 12345
    assert value(text, "jdr_prune_last_success_timestamp_seconds") == (T0 + timedelta(seconds=4)).timestamp()
    assert value(text, "jdr_drill_rto_seconds") == 600.5
    assert value(text, "jdr_drill_rpo_seconds") == 18000
    assert value(text, "jdr_drill_failures") == 0
    assert value(text, "jdr_drill_runs_total", result="ok") == 1
    assert value(text, "jdr_repository_size_bytes") == 10**9
    assert value(text, "jdr_worker_job_runs_total", job="backup", result="partial") == 1
    assert value(text, "jdr_worker_job_last_exit_code", job="backup") == 1
    assert value(text, "jdr_worker_skipped_runs_total", job="backup") == 1
    assert value(text, "jdr_prune_last_duration_seconds") == 4
    assert value(text, "jdr_prune_last_status", status="ok") == 1
    # a failed drill keeps the last good RTO/RPO and success time, and reports its failures
    m.record_drill(DrillMetrics(T0 + timedelta(days=90), T0 + timedelta(days=90, minutes=1), False,
                                rto_seconds=None, rpo_seconds=None, failures=2))
    text = m.render().decode()
    assert value(text, "jdr_drill_rto_seconds") == 600.5
    assert value(text, "jdr_drill_failures") == 2
    assert value(text, "jdr_drill_runs_total", result="failed") == 1


def test_every_documented_name_is_exposed_with_its_type() -> None:
    m = Metrics()
    m.record_backup(backup(status="complete"))
    m.record_job("backup", 0, T0, T0)
    m.record_skipped("backup")
    m.record_lock_retry("backup")
    m.record_lock_timeout("backup")
    m.record_drill(DrillMetrics(T0, T0, True, 1, 1))
    m.record_prune(PruneMetrics(T0, T0, True))
    m.record_copy(CopyMetrics(T0, T0, "complete", missing=0))
    m.record_repository(RepositoryMetrics(1, 1, damaged_artifacts=0))
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                names[s.name] = family.type
    assert names == METRIC_NAMES
    for name, kind in METRIC_NAMES.items():
        assert name.startswith("jdr_")
        assert name.endswith("_total") == (kind == "counter"), name


def test_registries_are_private() -> None:
    a, b = Metrics(), Metrics()  # two in one process must not clash on the global registry
    a.record_repository(RepositoryMetrics(1, 1))
    assert "jdr_repository_size_bytes" not in b.render().decode()  # never set: absent, not 0
    from prometheus_client import REGISTRY
    assert REGISTRY.get_sample_value("jdr_repository_size_bytes") is None


def test_groups_are_rendered_apart_and_one_shot_output_has_no_counters() -> None:
    m = Metrics()
    m.record_backup(backup(status="complete"))
    m.record_prune(PruneMetrics(T0, T0 + timedelta(seconds=2), True, runs_deleted=1))
    m.record_repository(RepositoryMetrics(5, 2))
    for group in ("backup", "prune", "repository"):
        text = m.render([group], counters=False).decode()  # type: ignore[list-item]
        got = {s for s, _ in samples(text)}
        assert got and all(METRICS[name][1] == group for name in got), (group, got)
        assert not any(METRICS[name][0] == "counter" for name in got)
    assert "jdr_build_info" not in m.render(["backup"], counters=False).decode()


def test_alert_rules_use_exposed_metrics() -> None:
    rules = yaml.safe_load(ALERTS_YAML.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"JdrNoSuccessfulBackup", "JdrUserBackupFailing", "JdrDrillOverdue"}
    for rule in rules:
        used = [n for n in METRIC_NAMES if n in rule["expr"]]
        assert used, rule["alert"]


def test_textfile_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "textfile" / "jdr.prom"
    m = Metrics()
    m.record_repository(RepositoryMetrics(77, 3))
    m.write_textfile(target)
    assert value(target.read_text(), "jdr_repository_size_bytes") == 77
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    inode = target.stat().st_ino
    m.record_repository(RepositoryMetrics(78, 3))
    m.write_textfile(target)
    assert value(target.read_text(), "jdr_repository_size_bytes") == 78
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["jdr.prom"]  # no temporary left behind


def test_textfile_write_failure_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "jdr.prom"
    m = Metrics()
    m.write_textfile(target)
    before = target.read_bytes()

    def boom(self: Metrics, *args: object) -> bytes:
        raise RuntimeError("render failed")

    monkeypatch.setattr(Metrics, "render", boom)
    with pytest.raises(RuntimeError):
        m.write_textfile(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jdr.prom"]


# --- a Pushgateway stand-in: a real HTTP server on loopback recording what it receives --------------------

class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200


@pytest.fixture
def gateway() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            rec.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "body": self.rfile.read(length)})
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


def test_push_to_gateway(gateway: tuple[str, Recorder]) -> None:
    url, rec = gateway
    m = Metrics()
    m.record_backup(backup(status="complete"))
    assert m.push(url, job="jdr-backup", grouping_key={"namespace": "jhub"})
    [req] = rec.requests
    assert req["method"] == "PUT"
    assert req["path"] == "/metrics/job/jdr-backup/namespace/jhub"
    body = req["body"].decode()
    assert value(body, "jdr_backup_last_files") == 42
    assert value(body, "jdr_backup_last_status", status="complete") == 1


def test_push_with_credentials_in_url_logs_host_only(gateway: tuple[str, Recorder],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    url, rec = gateway
    authed = url.replace("http://", "http://jdr:s3cr%40t@")
    assert Metrics().push(authed, job="jdr")
    [req] = rec.requests
    assert req["path"] == "/metrics/job/jdr"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"jdr:s3cr@t").decode()
    rec.status = 500
    with caplog.at_level(logging.WARNING, logger="dr.metrics"):
        assert not Metrics().push(authed, job="jdr")
    assert "127.0.0.1" in caplog.text and "HTTP 500" in caplog.text
    assert "s3cr" not in caplog.text


def test_push_to_nothing_returns_false(caplog: pytest.LogCaptureFixture) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with caplog.at_level(logging.WARNING, logger="dr.metrics"):
        assert not Metrics().push(f"http://127.0.0.1:{port}", job="jdr", timeout=2)
    assert "could not push metrics" in caplog.text


def test_textfile_merge_keeps_what_the_new_run_did_not_know(tmp_path: Path) -> None:
    target = tmp_path / "jdr_backup.prom"
    first = Metrics()
    first.record_backup(backup(status="complete"))
    first.write_textfile(target, ["backup"], counters=False, merge=True)
    success = value(target.read_text(), "jdr_backup_last_success_timestamp_seconds")
    # A run that failed before it could read the repository: its time and status, nothing else known.
    failed = Metrics()
    failed.record_backup(BackupMetrics("", T0 + timedelta(days=1), T0 + timedelta(days=1, seconds=5), "failed",
                                       committed=False))
    failed.write_textfile(target, ["backup"], counters=False, merge=True)
    text = target.read_text()
    assert value(text, "jdr_backup_last_status", status="failed") == 1
    assert value(text, "jdr_backup_last_status", status="complete") == 0
    assert value(text, "jdr_backup_last_run_timestamp_seconds") == (T0 + timedelta(days=1, seconds=5)).timestamp()
    assert value(text, "jdr_backup_last_success_timestamp_seconds") == success  # kept, not dropped or zeroed
    assert value(text, "jdr_backup_last_files") == 42  # the last committed run's
    assert text.count("# TYPE jdr_backup_last_status gauge") == 1  # no family twice


def test_push_merge_is_a_post_of_one_group(gateway: tuple[str, Recorder]) -> None:
    url, rec = gateway
    m = Metrics()
    m.record_backup(backup(status="complete"))
    m.record_prune(PruneMetrics(T0, T0 + timedelta(seconds=3), True))
    assert m.push(url, job="jdr_prune", groups=["prune"], counters=False, merge=True)
    [req] = rec.requests
    assert req["method"] == "POST" and req["path"] == "/metrics/job/jdr_prune"
    body = req["body"].decode()
    assert "jdr_prune_last_duration_seconds 3.0" in body
    assert "jdr_backup" not in body and "_total" not in body
