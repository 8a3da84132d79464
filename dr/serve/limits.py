"""Limits that protect the hub from its users: one restore per user at a time, hourly rate limits."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable


class RateLimiter:
    """At most ``per_hour`` events per key in any sliding hour (0: unlimited). Thread-safe."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self._clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Record one event for ``key`` and return 0, or, over the limit, record nothing and return the
        seconds until the next event would be allowed."""
        if self.per_hour <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - 3600:
                events.popleft()
            if len(events) >= self.per_hour:
                return events[0] + 3600 - now
            events.append(now)
            return 0.0


class RestoreGate:
    """One restore per user at a time. :meth:`enter` returns False while one runs for that user."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def enter(self, user: str) -> bool:
        with self._lock:
            if user in self._running:
                return False
            self._running.add(user)
            return True

    def leave(self, user: str) -> None:
        with self._lock:
            self._running.discard(user)

    def running(self, user: str) -> bool:
        with self._lock:
            return user in self._running
