"""Progress for long work: a rich bar with rate and ETA on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("jdr.progress")

LOG_EVERY = 30.0


@contextmanager
def progress_reporter(what: str, total_bytes: int | None = None,
                      enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yields ``update(files_done, bytes_done)``. Cumulative values per call site (monotonic)."""
    if not enabled:
        yield lambda files, done: None
        return
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[files]} files"),
                      transient=True) as bar:
            task = bar.add_task(what, total=total_bytes, files=0)
            base = [0, 0]
            last = [0, 0]

            def update(files: int, done: int) -> None:
                if done < last[1]:  # a new volume started counting from zero
                    base[0] += last[0]
                    base[1] += last[1]
                last[0], last[1] = files, done
                bar.update(task, completed=base[1] + done, files=base[0] + files)

            yield update
        return
    start = time.monotonic()
    state = {"last": start}

    def log_update(files: int, done: int) -> None:
        now = time.monotonic()
        if now - state["last"] >= LOG_EVERY:
            state["last"] = now
            rate = done / max(now - start, 1e-6)
            log.info("%s: %d files, %.1f MiB, %.1f MiB/s", what, files, done / 2**20, rate / 2**20)

    yield log_update
