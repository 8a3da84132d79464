"""Progress for long work: a rich bar with total, rate and ETA on a terminal, periodic log lines otherwise.

The operations call ``progress(files_done, bytes_done)`` with values cumulative *per item* (one volume);
a smaller value from the same thread means the next item started. Items reported from different threads
(``restore --all`` restores volumes in parallel) are summed, so the bar never shows more done than there
is. Totals come from what the command already knows: ``expect(files, bytes)`` adds a volume's listing
(backup), ``set_total`` the sizes recorded in the run's index (restore). The bar starts at the first
report, never before: a confirmation prompt shown earlier stays readable.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("jdr.progress")

LOG_EVERY = 30.0


class ProgressReporter:
    """Callable ``(files_done, bytes_done)``; see the module docstring. Thread-safe."""

    def __init__(self, what: str, *, console: Any = None, terminal: bool | None = None,
                 log_every: float = LOG_EVERY) -> None:
        self.what = what
        self._console = console
        self._terminal = terminal if terminal is not None else (
            console.is_terminal if console is not None else sys.stderr.isatty())
        self._log_every = log_every
        self._mutex = threading.Lock()
        self._finished = [0, 0]  # files, bytes of items that are done
        self._current: dict[int, list[int]] = {}  # thread -> [files, bytes] of its item in progress
        self._total: list[int] | None = None  # files, bytes expected
        self._bar: Any = None
        self._task: Any = None
        self._start = time.monotonic()
        self._last_log = self._start

    # --- what the operations call ---------------------------------------------------------------------

    def __call__(self, files: int, done: int) -> None:
        me = threading.get_ident()
        with self._mutex:
            cur = self._current.setdefault(me, [0, 0])
            if done < cur[1] or files < cur[0]:  # the thread moved on to its next item
                self._finished[0] += cur[0]
                self._finished[1] += cur[1]
            cur[0], cur[1] = files, done
        self._show()

    def expect(self, files: int, nbytes: int) -> None:
        """Add an item's size to the total (a backup calls it with each volume's listing)."""
        with self._mutex:
            total = self._total or [0, 0]
            self._total = [total[0] + files, total[1] + nbytes]
        self._show(start=False)

    def set_total(self, files: int, nbytes: int) -> None:
        with self._mutex:
            self._total = [files, nbytes]
        self._show(start=False)

    # --- state ----------------------------------------------------------------------------------------

    @property
    def done(self) -> tuple[int, int]:
        """(files, bytes) done over every item."""
        with self._mutex:
            files = self._finished[0] + sum(c[0] for c in self._current.values())
            nbytes = self._finished[1] + sum(c[1] for c in self._current.values())
        return files, nbytes

    @property
    def total(self) -> tuple[int, int] | None:
        with self._mutex:
            return (self._total[0], self._total[1]) if self._total else None

    # --- display --------------------------------------------------------------------------------------

    def _show(self, start: bool = True) -> None:
        files, nbytes = self.done
        total = self.total
        if self._terminal:
            if self._bar is None:
                if not start:
                    return
                self._open_bar()
            self._bar.update(self._task, completed=nbytes, total=total[1] if total else None, files=files,
                             total_files=f"/{total[0]}" if total else "")
            return
        now = time.monotonic()
        if start and now - self._last_log >= self._log_every:
            self._last_log = now
            rate = nbytes / max(now - self._start, 1e-6)
            of = f" of {total[0]} files, {total[1] / 2**20:.1f} MiB" if total else ""
            eta = f", about {(total[1] - nbytes) / rate:.0f}s left" if total and rate > 0 else ""
            log.info("%s: %d files, %.1f MiB done%s, %.1f MiB/s%s", self.what, files, nbytes / 2**20, of,
                     rate / 2**20, eta)

    def _open_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[files]}{task.fields[total_files]} files"),
                             transient=True, console=self._console)
        total = self.total
        self._task = self._bar.add_task(self.what, total=total[1] if total else None, files=0,
                                        total_files=f"/{total[0]}" if total else "")
        self._bar.start()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _Off:
    def __call__(self, files: int, done: int) -> None:
        pass

    def expect(self, files: int, nbytes: int) -> None:
        pass

    def set_total(self, files: int, nbytes: int) -> None:
        pass


@contextmanager
def progress_reporter(what: str, total_bytes: int | None = None, enabled: bool = True,
                      console: Any = None) -> Iterator[Any]:
    """A :class:`ProgressReporter` (or a silent stand-in when not ``enabled``), closed on exit."""
    if not enabled:
        yield _Off()
        return
    reporter = ProgressReporter(what, console=console)
    if total_bytes is not None:
        reporter.set_total(0, total_bytes)
    try:
        yield reporter
    finally:
        reporter.close()
