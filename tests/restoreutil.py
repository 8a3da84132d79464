"""What a restore leaves in a home, for tests: jdr's state directories (``.jdr-restore-<hex>``, only while
a restore runs or after one was killed) and the kept copies handed to the user (``jdr-replaced-<time>``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tests.treeutil import snapshot_tree

STATE = re.compile(rb"^\.jdr-restore-[0-9a-f]{16}(/|$)")
KEPT = re.compile(rb"^jdr-replaced-\d{8}T\d{6}Z(-\d+)?(/|$)")


def state_dirs(home: Path) -> list[Path]:
    """jdr's restore state directories at the root of ``home`` (root-owned, 0700)."""
    return sorted(p for p in home.glob(".jdr-restore-*") if STATE.match(os.fsencode(p.name))
                  and p.is_dir() and not p.is_symlink() and p.stat().st_uid == 0)


def journals(home: Path) -> list[Path]:
    return [s / "journal.json" for s in state_dirs(home) if (s / "journal.json").exists()]


def stagings(home: Path) -> list[Path]:
    return [s / "staging" for s in state_dirs(home) if (s / "staging").exists()]


def kept_copies(home: Path) -> list[Path]:
    """The replaced contents handed to the user, oldest first."""
    return sorted(p for p in home.iterdir() if KEPT.match(os.fsencode(p.name)) and p.is_dir())


def aside(home: Path) -> list[Path]:
    """Where replaced entries are now: kept copies, and ``replaced/`` of a killed restore's state."""
    return kept_copies(home) + [s / "replaced" for s in state_dirs(home) if (s / "replaced").is_dir()]


def home_tree(home: Path, *, root_mtime: bool = True, **kw: Any) -> dict[bytes, dict[str, Any]]:
    """``snapshot_tree(home)`` without jdr's state and the kept copies at its root."""
    snap = {k: v for k, v in snapshot_tree(home, **kw).items() if not STATE.match(k) and not KEPT.match(k)}
    if not root_mtime and b"." in snap:
        snap[b"."] = {k: v for k, v in snap[b"."].items() if k != "mtime_ns"}
    return snap
