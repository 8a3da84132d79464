"""A test hook that lets fault tests kill jdr at a named point. Inert unless ``JDR_TEST_PAUSE_AT`` is set.

With ``JDR_TEST_PAUSE_AT=<point>`` (and optionally ``JDR_TEST_PAUSE_AFTER=<n>``), the first call of
``pause_at(point, progress)`` with ``progress >= n`` prints ``jdr-test-paused-at <point>`` on stderr and
sleeps, so that a test can SIGKILL the process in a known state. Points: ``artifact-upload`` (progress:
bytes stored so far by one artifact), ``backup-commit`` (before the manifest is written),
``restore-extract`` (entries extracted into staging), ``restore-move-out`` / ``restore-move-in`` (entries
moved during the swap, after the journal was written).
"""

from __future__ import annotations

import os
import sys
import time

ENV_POINT = "JDR_TEST_PAUSE_AT"
ENV_AFTER = "JDR_TEST_PAUSE_AFTER"


def pause_at(point: str, progress: int = 0) -> None:
    if os.environ.get(ENV_POINT) != point or progress < int(os.environ.get(ENV_AFTER) or 0):
        return
    sys.stderr.write(f"jdr-test-paused-at {point}\n")
    sys.stderr.flush()
    time.sleep(3600)
