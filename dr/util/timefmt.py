"""Time helpers: UTC timestamps, ISO-8601 parsing with clear errors."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


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
