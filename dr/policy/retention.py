"""Retention: which runs a policy keeps, and why. A pure function of runs, policy, time and time zone.

Modelled on restic's ``ApplyPolicy`` (``internal/restic/snapshot_policy.go``), adapted to jdr's run statuses.

Semantics of :func:`apply_policy`:

- Runs are ordered newest first by time; runs at the same instant are ordered by id, the larger id counting
  as the newer (run ids sort by time, so this agrees with them). Decisions come back in that order.
- ``keep_last = N`` keeps the N newest runs that are ``complete`` or ``partial`` (reason ``last #k``).
- Each bucket rule (``keep_hourly``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly``) keeps
  one run from each of the N most recent *distinct periods that hold a usable run*: periods without runs
  do not use up the count, so after a gap of weeks ``keep_daily: 7`` still keeps seven days' worth of runs,
  spread out as far back as needed (as restic does). Periods are computed in the time zone ``tz`` (wall
  clock): a day is a local calendar day, a week an ISO week (``2026-W01`` may start in December), a month
  and a year are calendar ones. An hour is a local wall-clock hour *with its UTC offset*, so the hour that
  repeats when daylight saving time ends counts as two hours. The run kept for a period is its newest
  ``complete`` run; only a period with no complete run at all is represented by its newest ``partial`` run.
  ``failed`` runs are never kept by bucket rules and a period holding only failed runs does not count.
  Reasons read ``daily #2 (2026-11-20)``, ``weekly #1 (2026-W47)``, ``hourly #1 (2026-03-29 03:00+02:00)``.
- ``keep_within = D`` keeps every run (of any status, failed ones included, which helps diagnose them)
  strictly younger than D relative to ``now``: its time is after ``now - D``. Years, months and days in D are
  calendar units in ``tz`` (``1m`` before 31 March is the last day of February); hours, minutes and seconds
  are exact. A run dated after ``now`` counts as younger. Reason ``within 7d``.
- A count of ``-1`` means unlimited (every period, or every run for ``keep_last``), as in restic.
- The newest ``complete`` run is always kept, whatever the policy (reason ``newest successful run``). If no
  run is complete, the rule does not apply: a partial run is kept only by the rules above.
- An empty policy (every count 0 and no ``keep_within``) keeps every run (reason ``no retention policy``):
  pruning with nothing configured must not delete anything.
- A run kept by no rule is dropped with the reason ``not selected by any rule``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

from dr.errors import ConfigError

RunState = Literal["complete", "partial", "failed"]

REASON_NEWEST_SUCCESS = "newest successful run"
REASON_NO_POLICY = "no retention policy"
REASON_NOT_SELECTED = "not selected by any rule"


@dataclass(frozen=True)
class RunSummary:
    """What retention needs to know of a run. ``time`` must be timezone-aware."""

    id: str
    time: datetime
    status: RunState

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"run {self.id}: time must be timezone-aware, got {self.time!r}")
        if self.status not in ("complete", "partial", "failed"):
            raise ValueError(f"run {self.id}: unknown status {self.status!r}")


@dataclass(frozen=True)
class Decision:
    """Keep or drop one run, with every reason that applied (in rule order)."""

    run: str
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Duration:
    """A span such as ``1y2m`` or ``36h``: calendar years, months and days, then exact seconds."""

    years: int = 0
    months: int = 0
    days: int = 0
    seconds: int = 0
    text: str = field(default="", compare=False)  # how it was written, for reasons ("within 2w")

    @classmethod
    def of(cls, span: Duration | timedelta) -> Duration:
        if isinstance(span, Duration):
            return span
        total = int(span.total_seconds())
        if total <= 0:
            raise ValueError(f"duration must be positive, got {span}")
        if total // 86400 > MAX_DURATION_DAYS:
            raise ValueError(f"duration too long: {span} (at most {MAX_DURATION_DAYS // 366} years)")
        return cls(seconds=total)

    def before(self, now: datetime, tz: tzinfo) -> datetime:
        """The instant this span before ``now``, calendar parts counted on the wall clock of ``tz``."""
        local = now.astimezone(tz)
        month_index = local.year * 12 + (local.month - 1) - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        month += 1
        day = min(local.day, _days_in_month(year, month))
        # Wall-clock arithmetic on a zoneinfo-aware datetime keeps the local time; the offset is re-derived.
        shifted = local.replace(year=year, month=month, day=day) - timedelta(days=self.days)
        # Exact seconds are subtracted on the UTC timeline, so "36h" is 36 real hours across a DST change.
        return shifted.astimezone(UTC) - timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        if self.text:
            return self.text
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d")]
        hours, rest = divmod(self.seconds, 3600)
        minutes, secs = divmod(rest, 60)
        parts += [(hours, "h"), (minutes, "min"), (secs, "s")]
        return "".join(f"{n}{u}" for n, u in parts if n) or "0s"


#: The longest ``keep_within`` accepted, in days (about 1,000 years).
MAX_DURATION_DAYS = 366_000

_DURATION_PART = re.compile(r"(\d+)(min|y|m|w|d|h|s)")
_UNIT_SECONDS = {"h": 3600, "min": 60, "s": 1}


def parse_duration(text: str) -> Duration:
    """Parse ``7d``, ``2w``, ``36h``, ``1y2m``, ``1d12h``: units y (years), m (months), w (weeks), d (days),
    h (hours), min (minutes), s (seconds). Raises ValueError naming the text when it is not one."""
    value = text.strip()
    pos = 0
    years = months = days = seconds = 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        pos = match.end()
        n, unit = int(match.group(1)), match.group(2)
        if unit == "y":
            years += n
        elif unit == "m":
            months += n
        elif unit == "w":
            days += 7 * n
        elif unit == "d":
            days += n
        else:
            seconds += n * _UNIT_SECONDS[unit]
    if not value or pos != len(value):
        raise ValueError(f"not a duration: {text!r} (expected e.g. '7d', '2w', '36h', '1y2m')")
    if not (years or months or days or seconds):
        raise ValueError(f"duration must be positive: {text!r}")
    # Anything longer cannot be counted back from today on a calendar (year 1 is the floor), and is
    # surely a typo; "keep every run" is spelled keep_last: -1.
    if years * 366 + months * 31 + days + seconds // 86400 > MAX_DURATION_DAYS:
        raise ValueError(f"duration too long: {text!r} (at most {MAX_DURATION_DAYS // 366} years; "
                         "keep_last: -1 keeps every run)")
    return Duration(years=years, months=months, days=days, seconds=seconds, text=value)


@dataclass(frozen=True)
class RetentionPolicy:
    """The ``retention`` section of the configuration. Counts: 0 turns a rule off, -1 means unlimited."""

    keep_last: int = 0  # the N newest usable runs
    keep_hourly: int = 0  # the newest run of each of the N most recent hours with runs
    keep_daily: int = 0  # … days
    keep_weekly: int = 0  # … ISO weeks
    keep_monthly: int = 0  # … months
    keep_yearly: int = 0  # … years
    keep_within: Duration | timedelta | None = None  # every run younger than this, relative to now

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "keep_within":
                if value is not None:
                    object.__setattr__(self, "keep_within", Duration.of(value))
            elif isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(f"retention.{f.name} must be an integer >= 0 (or -1 for unlimited), "
                                 f"got {value!r}")

    @property
    def empty(self) -> bool:
        counts = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly,
                  self.keep_yearly)
        return not any(counts) and self.keep_within is None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "retention") -> RetentionPolicy:
        """Build from the configuration mapping; raises ConfigError naming an unknown key or a bad value."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
            if key == "keep_within":
                if value is None or value == "":  # unset ("" is how dr.settings spells it)
                    continue
                try:
                    kwargs[key] = parse_duration(str(value))
                except ValueError as e:
                    raise ConfigError(f"{where}.{key}: {e}") from e
            elif isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ConfigError(f"{where}.{key}: must be an integer >= 0 (or -1 for unlimited), "
                                  f"got {value!r}")
            else:
                kwargs[key] = value
        return cls(**kwargs)


# --- periods --------------------------------------------------------------------------------------------

def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days


def _hour(t: datetime) -> str:
    offset = t.strftime("%z")
    return f"{t:%Y-%m-%d %H}:00{offset[:3]}:{offset[3:]}"


def _iso_week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year}-W{week:02d}"


_BUCKETS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hourly", _hour),
    ("keep_daily", "daily", lambda t: f"{t:%Y-%m-%d}"),
    ("keep_weekly", "weekly", _iso_week),
    ("keep_monthly", "monthly", lambda t: f"{t:%Y-%m}"),
    ("keep_yearly", "yearly", lambda t: f"{t:%Y}"),
)


def _take(count: int, n: int) -> bool:
    """Whether the n-th selection (1-based) is within a count where -1 means unlimited."""
    return count == -1 or n <= count


# --- the policy -----------------------------------------------------------------------------------------

def apply_policy(runs: Sequence[RunSummary], policy: RetentionPolicy, now: datetime,
                 tz: tzinfo) -> list[Decision]:
    """Decide, for each run, whether ``policy`` keeps it and why (see the module docstring).

    Returns one Decision per run, newest first. Pure: no clock, no I/O. ``now`` must be aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    ordered = sorted(runs, key=lambda r: (r.time, r.id), reverse=True)
    ids = [r.id for r in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids must be unique")
    reasons: dict[str, list[str]] = {r.id: [] for r in ordered}

    if policy.empty:
        return [Decision(r.id, True, (REASON_NO_POLICY,)) for r in ordered]

    usable = [r for r in ordered if r.status != "failed"]
    if policy.keep_last:
        for n, run in enumerate(usable, start=1):
            if not _take(policy.keep_last, n):
                break
            reasons[run.id].append(f"last #{n}")

    for attr, name, period_of in _BUCKETS:
        count: int = getattr(policy, attr)
        if not count:
            continue
        # Newest first, so the first run seen of each status in a period is that period's newest.
        chosen: dict[str, RunSummary] = {}
        complete_seen: set[str] = set()
        periods: list[str] = []
        for run in usable:
            period = period_of(run.time.astimezone(tz))
            if period not in chosen:
                periods.append(period)
                chosen[period] = run
            if run.status == "complete" and period not in complete_seen:
                complete_seen.add(period)
                chosen[period] = run
        for n, period in enumerate(periods, start=1):
            if not _take(count, n):
                break
            reasons[chosen[period].id].append(f"{name} #{n} ({period})")

    if policy.keep_within is not None:
        within = Duration.of(policy.keep_within)
        cutoff = within.before(now, tz)
        for run in ordered:
            if run.time > cutoff:
                reasons[run.id].append(f"within {within}")

    newest_complete = next((r for r in ordered if r.status == "complete"), None)
    if newest_complete is not None:
        reasons[newest_complete.id].append(REASON_NEWEST_SUCCESS)

    return [Decision(r.id, bool(reasons[r.id]), tuple(reasons[r.id]) or (REASON_NOT_SELECTED,))
            for r in ordered]


def kept(decisions: Sequence[Decision]) -> list[str]:
    """The ids of the runs to keep, newest first."""
    return [d.run for d in decisions if d.keep]


def dropped(decisions: Sequence[Decision]) -> list[str]:
    """The ids of the runs to drop, newest first."""
    return [d.run for d in decisions if not d.keep]
