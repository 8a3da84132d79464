"""The injected wall clock (``JDR_NOW``, dr/util/timefmt.py): every command's notion of "now"."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from dr.cli.main import cli
from dr.model import new_run_id, run_time
from dr.util.timefmt import ENV_NOW, injected, real_utcnow, utcnow

T = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)


def test_without_jdr_now_the_clock_is_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_NOW, raising=False)
    before = datetime.now(UTC)
    now = utcnow()
    assert before <= now <= datetime.now(UTC)
    assert not injected()


def test_jdr_now_starts_the_clock_there_and_it_advances_in_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NOW, "2026-09-01T02:00:00Z")
    first = utcnow()
    assert injected()
    assert T <= first < T + timedelta(seconds=5)
    time.sleep(0.05)
    second = utcnow()
    assert second - first >= timedelta(seconds=0.05)  # durations stay real
    assert second < T + timedelta(seconds=5)
    assert new_run_id(second).startswith("20260901T0200")
    assert run_time(new_run_id(second)) == T
    # The real clock is untouched (stores' own times are compared with it).
    assert abs(real_utcnow() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_new_jdr_now_re_anchors_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NOW, "2026-09-01T02:00:00Z")
    utcnow()
    time.sleep(0.02)
    monkeypatch.setenv(ENV_NOW, "2026-09-02T03:30:00+00:00")
    now = utcnow()
    assert datetime(2026, 9, 2, 3, 30, tzinfo=UTC) <= now < datetime(2026, 9, 2, 3, 30, 1, tzinfo=UTC)
    # A naive time is UTC, an offset is honoured.
    monkeypatch.setenv(ENV_NOW, "2026-09-03T04:00:00+02:00")
    assert datetime(2026, 9, 3, 2, 0, tzinfo=UTC) <= utcnow() < datetime(2026, 9, 3, 2, 0, 1, tzinfo=UTC)
    monkeypatch.setenv(ENV_NOW, "2026-09-04T00:00:00")
    assert utcnow().date().isoformat() == "2026-09-04"


def test_a_bad_jdr_now_is_a_usage_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NOW, "yesterday")
    with pytest.raises(ValueError, match="JDR_NOW"):
        utcnow()
    result = CliRunner().invoke(cli, ["list"], env={ENV_NOW: "yesterday", "JDR_CONFIG": "/nonexistent.yaml"})
    assert result.exit_code == 2, result.output
    assert "JDR_NOW" in result.output and "yesterday" in result.output
