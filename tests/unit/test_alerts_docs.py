"""docs/alerts.yaml uses only metrics jdr publishes, and docs/MONITORING.md names exactly its alerts and the
files and Pushgateway jobs the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dr.metrics import GROUPS, METRICS, push_job, textfile_name

ROOT = Path(__file__).resolve().parents[2]


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((ROOT / "docs" / "alerts.yaml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_rules_use_only_published_metrics() -> None:
    for rule in rules():
        used = set(re.findall(r"\bjdr_[a-z_]+", str(rule["expr"])))
        assert used and used <= set(METRICS), (rule["alert"], used - set(METRICS))


def test_monitoring_doc_names_every_alert_file_and_job() -> None:
    text = (ROOT / "docs" / "MONITORING.md").read_text()
    alerts_section = text.split("## Alerts", 1)[1].split("##", 1)[0]
    assert set(re.findall(r"`(Jdr\w+)`", alerts_section)) == {str(r["alert"]) for r in rules()}
    for group in GROUPS:
        if group != "worker":
            assert f"`{textfile_name(group)}`" in text and f"`{push_job(group)}`" in text
