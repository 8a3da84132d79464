"""Job specifications and schedule parsing: 5-field cron (``0 2 * * *``), cron macros (``@daily``) and
``@every 30s`` intervals, all turned into APScheduler triggers in the worker's time zone."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from dr.errors import ConfigError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_EVERY = re.compile(r"^@every\s+((?:\d+(?:h|m|s))+)$")
_EVERY_PART = re.compile(r"(\d+)(h|m|s)")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: 0 (and 7) is Sunday


@dataclass(frozen=True)
class JobSpec:
    """A job of ``jdr worker``: a function returning an exit code, run on a schedule.

    Give ``cron`` (5-field cron, a macro such as ``@daily``, or ``@every 30s``) or ``interval_seconds``.
    Intervals exist for tests and for ``@every`` schedules; cron has minute resolution.
    """

    name: str
    func: Callable[[], int]
    cron: str | None = None
    interval_seconds: float | None = None

    @property
    def schedule(self) -> str:
        return self.cron if self.cron is not None else f"@every {self.interval_seconds:g}s"


def make_trigger(spec: JobSpec, tz: tzinfo) -> Any:
    """The APScheduler trigger for a job; ConfigError naming the job when its schedule is malformed."""
    if (spec.cron is None) == (spec.interval_seconds is None):
        raise ConfigError(f"schedule.{spec.name}: give either a cron expression or an interval")
    if spec.interval_seconds is not None:
        if spec.interval_seconds <= 0:
            raise ConfigError(f"schedule.{spec.name}: interval must be positive, got {spec.interval_seconds}")
        return IntervalTrigger(seconds=spec.interval_seconds, timezone=tz)
    text = " ".join((spec.cron or "").split())
    every = _EVERY.match(text)
    if every:
        units = {"h": 3600, "m": 60, "s": 1}
        seconds = sum(int(n) * units[u] for n, u in _EVERY_PART.findall(every.group(1)))
        if seconds <= 0:
            raise ConfigError(f"schedule.{spec.name}: interval must be positive, got {spec.cron!r}")
        return IntervalTrigger(seconds=seconds, timezone=tz)
    expr = MACROS.get(text, text)
    try:
        fields = expr.split()
        if len(fields) == 5:
            fields[4] = cron_day_of_week(fields[4])
        # As cron: jobs at fixed hours run once in the repeated hour; jobs on every hour run in both.
        kind = CronTrigger if fields[1:2] and fields[1].startswith("*") else OncePerWallClockCron
        return kind.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as e:
        raise ConfigError(
            f"schedule.{spec.name}: bad cron expression {spec.cron!r}: {e}",
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'; "
                 "or @daily, @hourly, @weekly, @monthly, @yearly, '@every 30m'") from e


class OncePerWallClockCron(CronTrigger):  # type: ignore[misc]
    """A cron trigger that fires a wall-clock time once, as cron does, when summer time ends.

    On the night the clocks go back, 02:00-03:00 happens twice (Europe); APScheduler 3.x fires a job due in
    that hour in both, so the nightly backup ran twice an hour apart (seen in tests/season). A fire time whose
    local date and time equal the previous fire's is the repeat: skipped.
    """

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        nxt: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        while (nxt is not None and previous_fire_time is not None
               and nxt.replace(tzinfo=None) == previous_fire_time.astimezone(nxt.tzinfo).replace(tzinfo=None)):
            just_after = (nxt.astimezone(UTC) + timedelta(microseconds=1)).astimezone(nxt.tzinfo)
            nxt = super().get_next_fire_time(nxt, just_after)
        return nxt


def cron_day_of_week(field: str) -> str:
    """Translate a cron day-of-week field (0 or 7 = Sunday, names allowed) into explicit day names.

    APScheduler 3.x's ``CronTrigger.from_crontab`` reads numeric days as Monday = 0, unlike cron, so
    ``1-5`` would mean Tuesday to Saturday; names are unambiguous. This can go if upstream changes that.
    """
    if field == "*" or field == "?":
        return "*"
    days: set[int] = set()
    for token in field.lower().split(","):
        base, _, step_text = token.partition("/")
        step = int(step_text) if step_text else 1
        if step <= 0:
            raise ValueError(f"bad step in day of week {field!r}")
        if base == "*":
            first, last = 0, 6
        else:
            lo, _, hi = base.partition("-")
            first = _day(lo, field)
            last = _day(hi, field) if hi else (6 if step_text else first)
            if hi and last == 0 and _day_is_seven(hi):
                last = 7
        if last < first:
            raise ValueError(f"day-of-week range runs backwards in {field!r}")
        days.update(d % 7 for d in range(first, last + 1, step))
    ordered = sorted(days, key=lambda d: (d + 6) % 7)  # Monday first, as APScheduler lists them
    return ",".join(_DAY_NAMES[d] for d in ordered)


def _day_is_seven(text: str) -> bool:
    return text.strip() == "7"


def _day(text: str, field: str) -> int:
    text = text.strip()
    if text.isdigit():
        n = int(text)
        if n > 7:
            raise ValueError(f"day of week {n} is out of range (0-7) in {field!r}")
        return n % 7
    if text[:3] in _DAY_NAMES:
        return _DAY_NAMES.index(text[:3])
    raise ValueError(f"unknown day of week {text!r} in {field!r}")
