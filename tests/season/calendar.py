"""When things happen in the season: the worker's jobs at the times its real triggers give (the same
``dr.scheduler.schedule.make_trigger`` that ``jdr worker`` hands to APScheduler, asked with
``get_next_fire_time`` exactly as APScheduler's scheduler loop asks it), and the days of the term."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from dr.scheduler.schedule import JobSpec, make_trigger


@dataclass(frozen=True, order=True)
class Fire:
    when: datetime  # aware, UTC
    job: str


def job_fires(schedules: dict[str, str], tz: tzinfo, start: datetime, end: datetime) -> list[Fire]:
    """Every fire time of every job in [start, end), in time order, as the worker's scheduler computes them:
    the next fire time after the previous one, asked at that instant."""
    fires: list[Fire] = []
    for name, cron in schedules.items():
        trigger = make_trigger(JobSpec(name=name, func=lambda: 0, cron=cron), tz)
        prev: datetime | None = None
        now = start
        while True:
            nxt = trigger.get_next_fire_time(prev, now)
            if nxt is None or nxt >= end:
                break
            utc = nxt.astimezone(UTC)
            fires.append(Fire(utc, name))
            # APScheduler asks again right after running the job, on the real (UTC) timeline: wall-clock
            # arithmetic on the local time would go back an hour when summer time ends.
            prev, now = nxt, (utc + timedelta(microseconds=1)).astimezone(tz)
    return sorted(fires)


def days(first: date, count: int) -> Iterator[tuple[int, date]]:
    for i in range(count):
        yield i, first + timedelta(days=i)


def at(day: date, hour: int, minute: int, tz: tzinfo) -> datetime:
    """A local wall-clock time of ``day`` in ``tz``, in UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(UTC)
