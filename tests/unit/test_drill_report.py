"""Drill reports: RPO/RTO arithmetic, extrapolation of a sampled drill, Markdown and HTML rendering."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from dr.operations.drill_html import duration, history_svg, render_html, render_markdown
from dr.operations.drill_report import (
    DrillReport,
    HistoryPoint,
    VolumeFinding,
    estimate_rto,
    history_point,
    rpo_seconds,
)

T0 = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)


def test_rpo_is_the_age_of_the_run_and_never_negative() -> None:
    assert rpo_seconds(T0, T0 - timedelta(hours=3)) == 3 * 3600
    assert rpo_seconds(T0, T0 + timedelta(seconds=2)) == 0.0  # a run "from the future": clock skew


def test_rto_measured_when_every_volume_was_restored() -> None:
    est = estimate_rto(2.0, [3.0, 5.0], sampled_bytes=800, total_bytes=800, total_volumes=2)
    assert est.method == "measured"
    assert est.seconds == pytest.approx(10.0)
    assert "measured" in est.explanation and "all 2 volumes" in est.explanation


def test_rto_extrapolated_by_bytes_from_a_sample() -> None:
    # 1 of 4 volumes, 100 of 1000 bytes, 4 s: the volumes would take 40 s, plus 1.5 s for the hub.
    est = estimate_rto(1.5, [4.0], sampled_bytes=100, total_bytes=1000, total_volumes=4)
    assert est.method == "extrapolated-by-bytes"
    assert est.seconds == pytest.approx(41.5)
    assert est.volumes_seconds == 4.0
    assert "extrapolated by bytes" in est.explanation and "100 of 1000 bytes" in est.explanation
    assert est.to_dict()["seconds"] == 41.5


def test_rto_extrapolated_by_count_when_the_sample_is_empty_of_bytes() -> None:
    est = estimate_rto(1.0, [0.5, 0.5], sampled_bytes=0, total_bytes=0, total_volumes=10)
    assert est.method == "extrapolated-by-count"
    assert est.seconds == pytest.approx(1.0 + 1.0 * 5)


def test_rto_without_volumes_is_the_hub_only_and_says_so() -> None:
    est = estimate_rto(0.7, [], sampled_bytes=0, total_bytes=500, total_volumes=3)
    assert est.method == "none" and est.seconds == 0.7
    assert "unknown" in est.explanation


def _report(ok: bool = True) -> DrillReport:
    r = DrillReport(drill="20261101T050000Z-abcdef", started=T0, run="20261031T020000Z-123456",
                    run_started=T0 - timedelta(hours=27), finished=T0 + timedelta(seconds=30),
                    target_kind="local", scratch="/tmp/jdr-drill-x")
    r.hub = {"status": "ok", "seconds": 0.5, "bytes": 4096, "integrity": "ok", "revision": "abc",
             "schema": {"verdict": "ok", "message": "database schema revision abc is known"}}
    r.users = {"db": ["alice", "bob"], "run": ["alice", "bob"], "missing_from_run": [], "not_in_db": [],
               "skipped": []}
    r.sample = {"requested": 1, "restorable": 2, "sampled": True, "selected": ["alice"]}
    r.volumes = [VolumeFinding(label="alice", user="alice", files=3, bytes=2 << 20, seconds=2.0,
                               index_files=3, files_on_disk=3, notebooks_checked=2, notebooks_total=2,
                               validator="nbformat 5")]
    r.rto = estimate_rto(0.5, [2.0], 2 << 20, 6 << 20, 2)
    if not ok:
        r.fail("user bob is missing from the run: their backup failed (home directory /x does not exist)")
        r.fail("volume <alice> | restore failed: sha256 mismatch")
    return r


def test_report_document_carries_rpo_rto_and_outcome() -> None:
    doc = _report().to_dict()
    assert doc["ok"] is True and doc["status"] == "passed"
    assert doc["rpo_seconds"] == 27 * 3600
    assert doc["rto_seconds"] == pytest.approx(0.5 + 2.0 * 3)
    assert doc["rto"]["method"] == "extrapolated-by-bytes"
    assert doc["restored_bytes"] == (2 << 20) + 4096
    assert doc["volumes"][0]["bytes_per_second"] == pytest.approx((2 << 20) / 2.0)
    json.dumps(doc)  # serialisable as is
    failed = _report(ok=False).to_dict()
    assert failed["ok"] is False and failed["status"] == "failed" and len(failed["failures"]) == 2


def test_markdown_states_outcome_rto_method_and_failures() -> None:
    md = render_markdown(_report().to_dict())
    assert md.startswith("# jdr drill 20261101T050000Z-abcdef: PASSED")
    assert "**RPO** 1 d 3 h" in md
    assert "extrapolated by bytes" in md
    assert "1 of 2 restorable volumes restored (a sample)" in md
    assert "| alice | ok | 3 |" in md
    assert "## Failures" not in md
    md = render_markdown(_report(ok=False).to_dict())
    assert "FAILED" in md.splitlines()[0]
    assert "- user bob is missing from the run: their backup failed" in md


def test_html_is_self_contained_escaped_and_charts_the_history() -> None:
    history = [HistoryPoint(drill=f"d{i}", time=T0 - timedelta(days=90 * (3 - i)), rto_seconds=60.0 * (i + 1),
                            rpo_seconds=3600.0 * (i + 1), ok=i != 1) for i in range(3)]
    page = render_html(_report(ok=False).to_dict(), history)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "&lt;alice&gt; | restore failed" in page  # failures are escaped
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg is not None
    root = ET.fromstring(svg.group(0))
    ns = "{http://www.w3.org/2000/svg}"
    lines = {p.get("class"): p.get("points", "").split() for p in root.iter(f"{ns}polyline")}
    assert len(lines["rto"]) == 3 and len(lines["rpo"]) == 3
    assert len([e for e in root.iter(f"{ns}line") if e.get("class") == "failed"]) == 1
    # Time runs left to right; a larger RPO is drawn higher (smaller y).
    xs = [float(p.split(",")[0]) for p in lines["rpo"]]
    ys = [float(p.split(",")[1]) for p in lines["rpo"]]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)


def test_history_svg_copes_with_one_point_and_none() -> None:
    one = history_svg([HistoryPoint("d", T0, None, 10.0, True)])
    root = ET.fromstring(one)
    assert len(list(root.iter("{http://www.w3.org/2000/svg}circle"))) == 1  # RPO only, no RTO known
    assert "no drills yet" in history_svg([])


def test_history_point_reads_report_json_and_ignores_other_documents() -> None:
    doc = _report().to_dict()
    p = history_point(doc)
    assert p is not None and p.drill == doc["drill"] and p.rpo_seconds == 27 * 3600 and p.ok
    assert history_point({"format": "something-else"}) is None
    assert history_point({"format": "jdr-drill-report", "drill": "x"}) is None  # no start time


@pytest.mark.parametrize(("seconds", "text"), [
    (0.123, "0.12 s"), (42.0, "42.0 s"), (245, "4 min 05 s"), (3 * 3600 + 20 * 60, "3 h 20 min"),
    (5 * 86400 + 4 * 3600, "5 d 4 h"), (None, "unknown"),
])
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text
