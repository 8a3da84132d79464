"""Retrying a job while another process holds the repository lock: back-off within a bounded window.

Jobs of one worker never lock each other out (the worker runs them one after the other), so a
:class:`~dr.errors.LockHeldError` seen by a job means another process — a CronJob, an administrator's
``jdr restore`` — holds the lock. Waiting a while is then the right thing; waiting forever is not: after
``window`` seconds the job gives up with :class:`LockWaitExpired` (exit 3), which its caller reports
loudly (log, metric, webhook).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from dr.errors import Interrupted, LockHeldError

log = logging.getLogger(__name__)

T = TypeVar("T")


class LockWaitExpired(LockHeldError):
    """The repository stayed locked by another process for the whole retry window."""


@dataclass(frozen=True)
class LockRetry:
    """``window``: seconds to keep trying; waits start at ``first`` and double up to ``longest``."""

    window: float = 3600.0
    first: float = 15.0
    longest: float = 300.0

    def delays(self) -> list[float]:
        """The waits between attempts, in order; their sum never exceeds ``window``."""
        out: list[float] = []
        total, delay = 0.0, max(self.first, 0.001)
        while total < self.window:
            step = min(delay, self.longest, self.window - total)
            out.append(step)
            total += step
            delay *= 2
        return out


def retry_while_locked(job: str, fn: Callable[[], T], policy: LockRetry, *,
                       wait: Callable[[float], bool],
                       on_retry: Callable[[LockHeldError, float], None] | None = None,
                       monotonic: Callable[[], float] = time.monotonic) -> T:
    """Call ``fn``; while it raises LockHeldError, ``wait(delay)`` (which returns True when the worker is
    stopping: the job then raises Interrupted) and try again, following ``policy.delays()``. When they are
    used up, raise LockWaitExpired naming the holder and how long the job waited."""
    started = monotonic()
    delays = iter(policy.delays())
    attempt = 1
    while True:
        try:
            return fn()
        except LockWaitExpired:
            raise
        except LockHeldError as e:
            delay = next(delays, None)
            if delay is None:
                waited = monotonic() - started
                log.error("job %s gives up: the repository stayed locked for %.0fs (%d attempts): %s",
                          job, waited, attempt, e)
                raise LockWaitExpired(
                    f"{job}: the repository stayed locked by another process for {waited:.0f}s "
                    f"({attempt} attempts): {e}",
                    hint="see who holds it with `jdr unlock` (stale locks) or wait for that operation to "
                         "end; worker.lock_wait sets how long jobs wait") from e
            log.warning("job %s: the repository is locked by another process (%s); retrying in %.0fs "
                        "(attempt %d)", job, e, delay, attempt)
            if on_retry is not None:
                on_retry(e, delay)
            if wait(delay):
                raise Interrupted(f"{job} stopped while waiting for the repository lock") from e
            attempt += 1
