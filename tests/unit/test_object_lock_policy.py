"""How long a run's objects are locked (dr/policy/object_lock.py): derived from the retention policy, or
``repository.object_lock_days``; a policy with no longest keeps needs the setting. And settings/wiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr import wiring
from dr.errors import ConfigError
from dr.policy.object_lock import lock_days_for, make_lock_policy
from dr.policy.retention import RetentionPolicy, parse_duration
from dr.settings import load_settings


@pytest.mark.parametrize(("policy", "days"), [
    (RetentionPolicy(keep_last=7), 8),
    (RetentionPolicy(keep_last=7, keep_daily=14, keep_weekly=8, keep_monthly=12), 12 * 31 + 1),
    (RetentionPolicy(keep_daily=14, keep_weekly=8), 57),
    (RetentionPolicy(keep_hourly=48), 3),
    (RetentionPolicy(keep_hourly=1), 2),
    (RetentionPolicy(keep_yearly=2, keep_daily=3), 733),
    (RetentionPolicy(keep_last=1, keep_within=parse_duration("1m10d")), 42),
    (RetentionPolicy(keep_within=parse_duration("36h")), 3),
])
def test_lock_length_covers_the_longest_the_policy_keeps_a_run(policy: RetentionPolicy, days: int) -> None:
    assert lock_days_for(policy) == (days, "")


@pytest.mark.parametrize(("policy", "why"), [
    (RetentionPolicy(), "empty"),
    (RetentionPolicy(keep_daily=7, keep_monthly=-1), "retention.keep_monthly is unlimited"),
])
def test_no_longest_means_the_days_must_be_set(policy: RetentionPolicy, why: str) -> None:
    days, reason = lock_days_for(policy)
    assert days is None and why in reason
    lock = make_lock_policy("governance", 0, policy)
    with pytest.raises(ConfigError, match=why) as e:
        lock.until(datetime.now(UTC))
    assert e.value.hint and "object_lock_days" in e.value.hint
    assert make_lock_policy("COMPLIANCE", 30, policy).days == 30  # the setting wins


def test_until_is_whole_seconds_never_shorter_than_asked() -> None:
    now = datetime(2026, 12, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    until = make_lock_policy("GOVERNANCE", 1, RetentionPolicy()).until(now)
    assert until == datetime(2026, 12, 2, 10, 0, 1, tzinfo=UTC) and until >= now + timedelta(days=1)


@pytest.mark.parametrize(("mode", "days", "bad"), [("LEGAL", 0, "object_lock_mode"), ("GOVERNANCE", -1, "object_lock_days"),
                                                   ("GOVERNANCE", 10**6, "object_lock_days")])
def test_bad_settings_are_named(mode: str, days: int, bad: str) -> None:
    with pytest.raises(ConfigError, match=bad):
        make_lock_policy(mode, days, RetentionPolicy(keep_last=3))


def test_settings_and_environment_reach_the_repository(tmp_path: Path) -> None:
    cfg = tmp_path / "jdr.yaml"
    cfg.write_text("repository:\n  url: file:///tmp/x\n  object_lock_mode: compliance\n"
                   "retention: {keep_daily: 10}\n")
    s = load_settings(cfg, {})
    lock = wiring.object_lock_policy(s)
    assert (lock.mode, lock.days) == ("COMPLIANCE", 11)
    s = load_settings(cfg, {"JDR_REPOSITORY_OBJECT_LOCK_DAYS": "90"})
    assert wiring.object_lock_policy(s).days == 90


def test_a_file_repository_refuses_to_lock_rather_than_ignore_it(tmp_path: Path) -> None:
    from dr.errors import RepositoryError
    from dr.repository.file import FileStore
    from dr.repository.store import Retention

    store = FileStore.from_url(f"file://{tmp_path}/repo")
    assert not store.object_lock_enabled()
    lock = Retention("GOVERNANCE", datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(RepositoryError, match="cannot lock objects"):
        store.put("runs/x.json", b"{}", lock)
    store.put("runs/x.json", b"{}")
    with pytest.raises(RepositoryError, match="cannot lock objects"):
        store.set_retention("runs/x.json", lock)
    assert store.purge("runs/x.json") == 1 and store.purge("runs/x.json") == 0
