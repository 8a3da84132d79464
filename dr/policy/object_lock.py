"""How long S3 Object Lock keeps a run's objects (docs/FORMAT.md, "Object Lock"). Pure.

The lock must cover the retention policy: no run may become deletable while the policy still keeps it.
A run's lock lasts ``repository.object_lock_days`` when set, else the longest the retention rules keep a
run while backups keep coming (:func:`lock_days_for`):

- ``keep_within D``: D (years counted as 366 days, months as 31);
- ``keep_hourly N``: N hours; ``keep_daily N``: N days; ``keep_weekly N``: N weeks; ``keep_monthly N``:
  31·N days; ``keep_yearly N``: 366·N days;
- ``keep_last N``: N days (the default schedule makes one run a day; set ``object_lock_days`` for more
  frequent backups only if you want a shorter lock);
- plus one day, because a period's run may be from the period's start.

An unlimited rule (-1), or no policy at all (which keeps every run), has no longest: then
``object_lock_days`` must be set. A run kept longer than that (the newest successful one when backups
stop) stays in the repository, only unlocked; ``jdr verify`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from dr.errors import ConfigError
from dr.policy.retention import Duration, RetentionPolicy

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
LOCK_MODES: tuple[LockMode, ...] = ("GOVERNANCE", "COMPLIANCE")

DAY = 86400
MAX_LOCK_DAYS = 36_600  # 100 years: anything longer is a typo


@dataclass(frozen=True)
class ObjectLockPolicy:
    """The lock given to every artifact and manifest of a run when the bucket has Object Lock enabled.

    ``days`` is None when it cannot be derived (``reason`` says why): writing to a locked bucket then
    fails with a ConfigError asking for ``repository.object_lock_days``."""

    mode: LockMode = "GOVERNANCE"
    days: int | None = None
    reason: str = ""
    #: Write without retention and leave the locking to the process that commits the run (it extends every
    #: artifact's lock before the manifest is written): Kubernetes movers, which do not know the policy.
    deferred: bool = False

    def until(self, now: datetime) -> datetime:
        """The retain-until date of a run written at ``now`` (a real, store-side time)."""
        if self.days is None:
            raise ConfigError(f"the bucket has S3 Object Lock enabled, and {self.reason}",
                              hint="set repository.object_lock_days (JDR_REPOSITORY_OBJECT_LOCK_DAYS) to "
                                   "how long each run must stay undeletable")
        until = now + timedelta(days=self.days)
        # Whole seconds, rounded up: S3 stores retain-until dates to the second (SeaweedFS, AWS), so a
        # finer date would read back shorter than asked and look like a lock that needs extending.
        return until.replace(microsecond=0) + timedelta(seconds=1 if until.microsecond else 0)


def _days(span: Duration) -> int:
    return span.years * 366 + span.months * 31 + span.days + -(-span.seconds // DAY)


def lock_days_for(policy: RetentionPolicy) -> tuple[int | None, str]:
    """The lock length in days that covers ``policy`` (module docstring), or (None, why not)."""
    if policy.empty:
        return None, "the retention policy is empty (it keeps every run, so no lock length covers it)"
    counts = {"keep_last": 1, "keep_daily": 1, "keep_weekly": 7, "keep_monthly": 31, "keep_yearly": 366}
    unlimited = [k for k in (*counts, "keep_hourly") if getattr(policy, k) == -1]
    if unlimited:
        return None, f"retention.{unlimited[0]} is unlimited (-1), so no lock length covers it"
    days = [getattr(policy, k) * per for k, per in counts.items()]
    days.append(-(-policy.keep_hourly // 24))
    if policy.keep_within is not None:
        days.append(_days(Duration.of(policy.keep_within)))
    return min(max(days) + 1, MAX_LOCK_DAYS), ""


def make_lock_policy(mode: str, days: int, retention: RetentionPolicy) -> ObjectLockPolicy:
    """From ``repository.object_lock_mode`` and ``repository.object_lock_days`` (0: derive from
    ``retention``). ConfigError names a bad value."""
    upper = mode.upper()
    if upper not in ("GOVERNANCE", "COMPLIANCE"):
        raise ConfigError(f"repository.object_lock_mode: {mode!r} is not GOVERNANCE or COMPLIANCE")
    if days < 0 or days > MAX_LOCK_DAYS:
        raise ConfigError(f"repository.object_lock_days: must be between 1 and {MAX_LOCK_DAYS} (0: derive it "
                          f"from the retention policy), got {days}")
    lock_mode: LockMode = "GOVERNANCE" if upper == "GOVERNANCE" else "COMPLIANCE"
    if days:
        return ObjectLockPolicy(lock_mode, days)
    derived, why = lock_days_for(retention)
    return ObjectLockPolicy(lock_mode, derived, why)
