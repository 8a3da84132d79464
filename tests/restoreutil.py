"""What a restore leaves in a home, for tests: jdr's state directories (``.jdr-restore-<hex>``, only while
a restore runs or after one was killed) and the kept copies handed to the user (``jdr-replaced-<time>``)."""

from __future__ import annotations

import io
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dr.archive.index import load_index
from dr.archive.writer import write_archive
from dr.deployments.volume_swap import SwapResult, restore_into
from dr.model import IndexEntry
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


# --- driving the engine directly ---------------------------------------------------------------------------


def archive_tree(root: Path) -> tuple[bytes, dict[bytes, IndexEntry]]:
    """(zstd tar, index) of the tree at ``root``, as a backup writes them."""
    out, idx = io.BytesIO(), io.BytesIO()
    write_archive(root, out, idx, threads=1)
    return out.getvalue(), load_index(io.BytesIO(idx.getvalue()))


def restore(home: Path, archive: bytes, index: dict[bytes, IndexEntry] | None, **kw: Any) -> SwapResult:
    return restore_into(home, io.BytesIO(archive), run="test-run", index=index, **kw)


def make_sentinel(path: Path) -> Path:
    """A tree outside the home that no restore may touch: root-owned files, a directory, a private file,
    and a writable-looking directory (0777) where a redirected write would land."""
    (path / "sub").mkdir(parents=True)
    (path / "keep").write_text("original\n")
    (path / "sub" / "deep").write_text("deep original\n")
    (path / "private").write_text("root only\n")
    os.chmod(path / "private", 0o600)
    (path / "open").mkdir()
    os.chmod(path / "open", 0o777)
    os.utime(path / "keep", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return path


def sentinel_state(path: Path) -> tuple[dict[bytes, dict[str, Any]], dict[str, Any]]:
    """What must not change: the sentinel tree, with its root's own attributes, and the directory holding
    it (its listing and attributes but mtime: tests create things beside it). Not /etc/passwd: other
    tests on a shared machine add users."""
    st = os.lstat(path.parent)
    return snapshot_tree(path), {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture
def unprivileged_user() -> Iterator[User]:
    """A real Linux user (``jdrtse…``, no home, no shell) for attacks run with its privileges; removed
    afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user")
    name = f"jdrtse{os.getpid() % 100000}{secrets.token_hex(2)}"
    subprocess.run(["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    try:
        pw = pwd.getpwnam(name)
        yield User(name, pw.pw_uid, pw.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory that every user can traverse (pytest's tmp_path is root-only), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="jdrtse-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
