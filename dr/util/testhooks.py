"""A test hook that lets fault tests kill jdr at a named point. Inert unless ``JDR_TEST_PAUSE_AT`` is set.

With ``JDR_TEST_PAUSE_AT=<point>`` (and optionally ``JDR_TEST_PAUSE_AFTER=<n>``), the first call of
``pause_at(point, progress)`` with ``progress >= n`` prints ``jdr-test-paused-at <point>`` on stderr and
sleeps, so that a test can SIGKILL the process in a known state. Points: ``artifact-upload`` (progress:
bytes stored so far by one artifact), ``backup-commit`` (before the manifest is written),
``restore-extract`` (entries extracted into staging), ``restore-move-out`` / ``restore-move-in`` (entries
moved during the swap, after the journal was written), ``restore-merge-dir`` (a directory of the home
about to be merged into), ``restore-handover`` (before the replaced entries are handed to the user),
``hubdb-capture`` (about to copy the hub DB with the online backup API, its source connection open).

With ``JDR_TEST_RESUME_FILE=<path>`` as well, the process does not wait to be killed: it goes on once that
file exists, so that a test can make something happen at exactly that point (a write to the hub DB)
without relying on timing.

In-process tests may also register a listener (:func:`set_listener`) that is called at every point, to
act (e.g. plant a symlink) at an exact step of a restore.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

ENV_POINT = "JDR_TEST_PAUSE_AT"
ENV_AFTER = "JDR_TEST_PAUSE_AFTER"
ENV_RESUME = "JDR_TEST_RESUME_FILE"


_listener: Callable[[str, int], None] | None = None


def set_listener(listener: Callable[[str, int], None] | None) -> None:
    """Call ``listener(point, progress)`` at every pause point of this process (None: stop)."""
    global _listener
    _listener = listener


def pause_at(point: str, progress: int = 0) -> None:
    if _listener is not None:
        _listener(point, progress)
    if os.environ.get(ENV_POINT) != point or progress < int(os.environ.get(ENV_AFTER) or 0):
        return
    sys.stderr.write(f"jdr-test-paused-at {point}\n")
    sys.stderr.flush()
    resume = os.environ.get(ENV_RESUME)
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        if resume and os.path.exists(resume):
            return
        time.sleep(0.01)
