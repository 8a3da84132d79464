"""Time helpers: the wall clock (which tests can inject), UTC timestamps, ISO-8601 parsing with clear errors.

The wall clock
--------------
:func:`utcnow` is the one wall clock of jdr: run ids, manifest and report times, retention ("is this run
older than 14 days?"), locks, metrics timestamps, drill ids, the worker's job records and catch-up decisions
all read it. With the environment variable ``JDR_NOW`` set to an ISO-8601 time (``2026-09-01T02:00:00Z``),
the clock *starts* at that time when jdr first reads it and then advances in real time, so durations stay
true while the date is the injected one; setting ``JDR_NOW`` to another value re-anchors the clock there.
This is how the season test (``tests/season/``) runs months of nights in minutes. An unparsable value is a
ValueError naming the variable (the CLI turns it into a usage error, exit 2).

Two kinds of time must *not* be injected, and do not use :func:`utcnow`:

- durations and deadlines: ``time.monotonic()``;
- comparisons with times that a store or the kernel wrote (a file's mtime, an S3 object's
  ``LastModified``, a multipart upload's ``Initiated``): those are real, so compare them with
  :func:`real_utcnow`.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

ENV_NOW = "JDR_NOW"

_anchor_lock = threading.Lock()
_anchor: tuple[str, datetime, float] | None = None  # (JDR_NOW text, its time, monotonic() when first seen)


def utcnow() -> datetime:
    """Now, in UTC (aware): the real time, or the injected ``JDR_NOW`` clock (see the module docstring)."""
    text = os.environ.get(ENV_NOW, "").strip()
    if not text:
        return datetime.now(UTC)
    return _injected(text)


def real_utcnow() -> datetime:
    """The real time, in UTC, whatever ``JDR_NOW`` says: for comparisons with times a store wrote."""
    return datetime.now(UTC)


def injected() -> bool:
    """Whether the wall clock is injected (``JDR_NOW`` is set)."""
    return bool(os.environ.get(ENV_NOW, "").strip())


def check_clock() -> None:
    """Raise ValueError naming ``JDR_NOW`` if it is set to something that is not an ISO-8601 time."""
    utcnow()


def _injected(text: str) -> datetime:
    global _anchor
    with _anchor_lock:
        if _anchor is None or _anchor[0] != text:
            try:
                start = parse_iso(text)
            except ValueError as e:
                raise ValueError(f"{ENV_NOW}: {e}") from e
            _anchor = (text, start, time.monotonic())
        _, start, since = _anchor
    return start + timedelta(seconds=time.monotonic() - since)


def iso(ts: datetime) -> str:
    """Render an aware datetime as ISO-8601 in UTC with a trailing Z."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 time; a naive time is taken as UTC. Raises ValueError naming the input."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from e
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts
