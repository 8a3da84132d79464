"""Parsing what JupyterHub stores: naive-UTC times and spawner state JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dr.hubdb.info import parse_state, parse_time


@pytest.mark.parametrize(("stored", "expected"), [
    ("2026-11-20 09:30:00.123456", datetime(2026, 11, 20, 9, 30, 0, 123456, tzinfo=UTC)),
    ("2026-11-20 09:30:00", datetime(2026, 11, 20, 9, 30, tzinfo=UTC)),
    ("2026-11-20T09:30:00+02:00", datetime(2026, 11, 20, 7, 30, tzinfo=UTC)),
    (datetime(2026, 1, 2, 3, 4), datetime(2026, 1, 2, 3, 4, tzinfo=UTC)),
    (None, None),
    ("", None),
    ("not a time", None),
])
def test_times_are_utc_aware(stored: object, expected: datetime | None) -> None:
    got = parse_time(stored)
    assert got == expected
    if got is not None:
        assert got.utcoffset() == timedelta(0)
        assert got.tzinfo == UTC


@pytest.mark.parametrize(("stored", "expected"), [
    (None, {}),
    ("", {}),
    ("null", {}),
    ('{"pvc_name": "claim-alice", "pod_name": "jupyter-alice"}',
     {"pvc_name": "claim-alice", "pod_name": "jupyter-alice"}),
    (b'{"pvc_name": "claim-\\u00e9mile"}', {"pvc_name": "claim-émile"}),
    ("[1, 2]", {"_raw": [1, 2]}),
    ("{broken", {"_raw": "{broken"}),
])
def test_spawner_state(stored: object, expected: dict[str, object]) -> None:
    assert parse_state(stored) == expected
