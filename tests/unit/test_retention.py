"""Retention policy: golden cases (tests/unit/golden/retention/*.json, checked by hand) and the helpers.

Each golden file holds the runs, the policy, ``now``, the time zone and the expected decision for every run
(newest first, with reasons). There is deliberately no way to regenerate them from the code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dr.errors import ConfigError
from dr.policy.retention import (
    Decision,
    Duration,
    RetentionPolicy,
    RunSummary,
    apply_policy,
    dropped,
    kept,
    parse_duration,
)
from dr.util.timefmt import parse_iso

GOLDEN = Path(__file__).parent / "golden" / "retention"
CASES = sorted(GOLDEN.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_enough_golden_cases() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path) -> None:
    case = _load(path)
    runs = [RunSummary(r["id"], parse_iso(r["time"]), r["status"]) for r in case["runs"]]
    policy = RetentionPolicy.from_dict(case["policy"])
    got = apply_policy(runs, policy, parse_iso(case["now"]), ZoneInfo(case["tz"]))
    expected = [Decision(d["run"], d["keep"], tuple(d["reasons"])) for d in case["expected"]]
    assert got == expected, case["description"]
    # Every run gets exactly one decision, and the newest complete run is always kept.
    assert sorted(d.run for d in got) == sorted(r.id for r in runs)
    complete = [r for r in runs if r.status == "complete"]
    if complete:
        newest = max(complete, key=lambda r: (r.time, r.id))
        assert newest.id in kept(got)


def _runs(n: int, status: str = "complete") -> list[RunSummary]:
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    return [RunSummary(f"r{i:04d}", start + timedelta(days=i), status) for i in range(n)]  # type: ignore[arg-type]


def test_unlimited_count_keeps_every_period() -> None:
    runs = _runs(40)
    decisions = apply_policy(runs, RetentionPolicy(keep_daily=-1), runs[-1].time, UTC)
    assert all(d.keep for d in decisions)
    assert decisions[-1].reasons == ("daily #40 (2026-01-01)",)


def test_keep_last_skips_failed_runs() -> None:
    runs = [*_runs(3), RunSummary("zz", datetime(2026, 2, 1, tzinfo=UTC), "failed")]
    decisions = apply_policy(runs, RetentionPolicy(keep_last=1), datetime(2026, 2, 2, tzinfo=UTC), UTC)
    assert [d.run for d in decisions] == ["zz", "r0002", "r0001", "r0000"]
    assert decisions[0] == Decision("zz", False, ("not selected by any rule",))
    assert decisions[1].reasons == ("last #1", "newest successful run")
    assert kept(decisions) == ["r0002"]
    assert dropped(decisions) == ["zz", "r0001", "r0000"]


def test_keep_within_accepts_a_timedelta() -> None:
    runs = _runs(10)
    now = runs[-1].time + timedelta(hours=1)
    decisions = apply_policy(runs, RetentionPolicy(keep_within=timedelta(days=3)), now, UTC)
    assert kept(decisions) == ["r0009", "r0008", "r0007"]
    assert decisions[1].reasons == ("within 72h",)  # a timedelta is exact time, not calendar days


def test_no_runs() -> None:
    assert apply_policy([], RetentionPolicy(keep_last=3), datetime.now(UTC), UTC) == []


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RunSummary("x", datetime(2026, 1, 1), "complete")
    with pytest.raises(ValueError, match="aware"):
        apply_policy([], RetentionPolicy(keep_last=1), datetime(2026, 1, 1), UTC)


def test_duplicate_ids_are_refused() -> None:
    run = _runs(1)[0]
    with pytest.raises(ValueError, match="unique"):
        apply_policy([run, run], RetentionPolicy(keep_last=1), run.time, UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", Duration(days=7)),
    ("2w", Duration(days=14)),
    ("36h", Duration(seconds=36 * 3600)),
    ("1y2m", Duration(years=1, months=2)),
    ("1d12h", Duration(days=1, seconds=12 * 3600)),
    ("90min", Duration(seconds=5400)),
    (" 3m ", Duration(months=3)),
])
def test_parse_duration(text: str, expected: Duration) -> None:
    got = parse_duration(text)
    assert got == expected
    assert str(got) == text.strip()


@pytest.mark.parametrize("text", ["", "7", "d7", "7 d", "7x", "1.5d", "0d", "-1d", "7dd"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration") as e:
        parse_duration(text)
    assert repr(text) in str(e.value) or text.strip() in str(e.value)


def test_duration_before_clamps_month_end() -> None:
    now = datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert Duration(months=1).before(now, UTC) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert Duration(years=2, months=1).before(now, UTC) == datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert Duration(months=15).before(now, UTC) == datetime(2024, 12, 31, 12, tzinfo=UTC)


def test_duration_before_on_wall_clock() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 30, 12, tzinfo=UTC)
    assert Duration(days=1).before(now, berlin) == datetime(2026, 3, 29, 12, tzinfo=UTC)
    assert Duration(days=2).before(now, berlin) == datetime(2026, 3, 28, 13, tzinfo=UTC)
    assert Duration(seconds=48 * 3600).before(now, berlin) == datetime(2026, 3, 28, 12, tzinfo=UTC)


def test_policy_from_dict_names_bad_keys() -> None:
    assert RetentionPolicy.from_dict({"keep_last": 7, "keep_within": "2w"}) == RetentionPolicy(
        keep_last=7, keep_within=Duration(days=14))
    assert RetentionPolicy.from_dict({"keep_daily": 3, "keep_within": ""}) == RetentionPolicy(keep_daily=3)
    with pytest.raises(ConfigError, match=r"retention\.keep_dialy: unknown key"):
        RetentionPolicy.from_dict({"keep_dialy": 7})
    with pytest.raises(ConfigError, match=r"retention\.keep_daily: must be an integer"):
        RetentionPolicy.from_dict({"keep_daily": "7"})
    with pytest.raises(ConfigError, match=r"retention\.keep_daily"):
        RetentionPolicy.from_dict({"keep_daily": -2})
    with pytest.raises(ConfigError, match=r"retention\.keep_weekly"):
        RetentionPolicy.from_dict({"keep_weekly": True})
    with pytest.raises(ConfigError, match=r"retention\.keep_within: not a duration: '7 days'"):
        RetentionPolicy.from_dict({"keep_within": "7 days"})


def test_policy_validates_directly() -> None:
    with pytest.raises(ValueError, match="keep_last"):
        RetentionPolicy(keep_last=-5)
    assert RetentionPolicy().empty
    assert not RetentionPolicy(keep_within=timedelta(hours=1)).empty
