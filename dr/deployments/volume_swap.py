"""Restoring into a volume without ever losing what it held: extract beside, verify, then swap.

Used in-process for local homes and inside mover pods for PVCs (the PVC's mount point cannot be
renamed, so the swap moves entries, not the root). Everything jdr keeps lives under ``<root>/.jdr-restore``:

- ``staging-<run>/``: the archive is extracted here first. Any refusal (hostile entry, bad checksum,
  full disk) removes it and leaves the volume as it was.
- ``previous-<time>/``: the entries that a restore replaced, kept until the administrator deletes them
  (or removed after success when ``keep_previous`` is false).
- ``journal.json``: written once staging is complete and verified; the swap then rolls *forward* in
  idempotent steps, so a restore killed at any point is finished by the next run (``recover``), and the
  replaced entries are always either in place or in ``previous-…``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dr.archive.globs import path_matcher
from dr.archive.reader import extract_archive
from dr.errors import UsageError
from dr.model import IndexEntry
from dr.util.testhooks import pause_at
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

RESTORE_DIR = ".jdr-restore"
JOURNAL = "journal.json"


@dataclass(frozen=True)
class SwapResult:
    files: int
    bytes: int
    previous: str | None  # path of the kept previous contents, or None


def restore_into(root: Path, archive: BinaryIO, *, run: str, index: Mapping[bytes, IndexEntry] | None,
                 paths: tuple[str, ...] = (), into: str | None = None, allow_external_links: bool = False,
                 keep_previous: bool = True, drain: Callable[[BinaryIO], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> SwapResult:
    """Restore the (decrypted, zstd-compressed) ``archive`` into the volume at ``root``.

    ``paths``: only the entries matching these globs, merged into the current contents (entries they
    replace are kept aside). ``into``: extract into ``root/into`` (which must not exist) and touch nothing
    else. Otherwise the whole volume is replaced. ``drain`` reads the rest of ``archive`` so that a
    verifying reader below it checks the artifact's checksum before anything is swapped in.
    """
    if not root.is_dir():
        raise UsageError(f"restore target {root} does not exist or is not a directory")
    recover(root)
    dest_into: Path | None = None
    if into is not None:
        dest_into = _into_path(root, into)
        if os.path.lexists(dest_into):
            raise UsageError(f"--into {into}: {dest_into} already exists; choose a new directory name")
    work = root / RESTORE_DIR
    root_before = _attrs_of(root)
    work.mkdir(mode=0o700, exist_ok=True)
    staging = work / f"staging-{run}"
    if os.path.lexists(staging):
        shutil.rmtree(staging)  # left by a restore killed before its journal: incomplete, redo it
    staging.mkdir(mode=0o700)
    try:
        select = path_matcher(paths) if paths else None
        stats = extract_archive(archive, staging, select=select, index=index,
                                allow_external_links=allow_external_links, progress=progress)
        if drain is not None:
            drain(archive)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _rmdir_quiet(work)
        if not os.path.lexists(work):
            _apply_attrs(root, root_before)  # a refused restore leaves the home exactly as it was
        raise
    if dest_into is not None:
        dest_into.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, dest_into)
        _rmdir_quiet(work)
        return SwapResult(stats.files, stats.bytes, None)
    previous = work / ("previous-" + utcnow().strftime("%Y%m%dT%H%M%S%fZ"))
    # The root's attributes as restored, taken before the swap moves entries out of staging (which
    # changes its mtime); applied again last, after .jdr-restore is gone, so the home keeps its mtime.
    journal: dict[str, Any] = {"run": run, "mode": "paths" if paths else "full",
                               "staging": staging.name, "previous": previous.name, "phase": "move-out",
                               "root_attrs": _attrs_of(staging)}
    _write_journal(work, journal)
    _roll_forward(root, work, journal)
    kept: str | None = str(previous) if previous.exists() else None
    if kept and not keep_previous:
        shutil.rmtree(previous)
        kept = None
    _rmdir_quiet(work)
    _apply_attrs(root, journal["root_attrs"])
    return SwapResult(stats.files, stats.bytes, kept)


def recover(root: Path) -> bool:
    """Finish a swap that a killed restore left half done. Returns True if there was one."""
    work = root / RESTORE_DIR
    try:
        journal = json.loads((work / JOURNAL).read_text())
    except FileNotFoundError:
        return False
    log.warning("finishing an interrupted restore of %s (run %s)", root, journal.get("run"))
    _roll_forward(root, work, journal)
    _rmdir_quiet(work)
    if journal.get("root_attrs"):
        _apply_attrs(root, journal["root_attrs"])
    return True


def _roll_forward(root: Path, work: Path, journal: dict[str, Any]) -> None:
    staging = work / journal["staging"]
    previous = work / journal["previous"]
    if journal["phase"] == "move-out":
        if journal["mode"] == "full":
            for moved, name in enumerate(sorted(os.listdir(root))):
                if name == RESTORE_DIR:
                    continue
                previous.mkdir(mode=0o700, exist_ok=True)
                pause_at("restore-move-out", moved)
                os.rename(root / name, previous / name)
        journal["phase"] = "move-in"
        _write_journal(work, journal)
    _merge(staging, root, previous)
    if journal.get("root_attrs"):
        _apply_attrs(root, journal["root_attrs"])
    shutil.rmtree(staging, ignore_errors=True)
    (work / JOURNAL).unlink()


def _merge(src: Path, dst: Path, previous: Path) -> None:
    """Move every entry of ``src`` into ``dst``; an entry of ``dst`` it replaces goes to ``previous``.

    Directories present on both sides are merged recursively. Each step is a rename, so re-running after
    a kill continues where it stopped (moved entries are no longer in ``src``).
    """
    for name in sorted(os.listdir(src)):
        if name == RESTORE_DIR:
            continue  # jdr's own bookkeeping is never restored over
        s, d = src / name, dst / name
        if s.is_dir() and not s.is_symlink() and d.is_dir() and not d.is_symlink():
            attrs = _attrs_of(s)  # before moving entries out of ``s`` changes its mtime
            _merge(s, d, previous / name)
            _apply_attrs(d, attrs)
            with contextlib.suppress(OSError):
                s.rmdir()
            continue
        if os.path.lexists(d):
            previous.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.rename(d, previous / name)
        pause_at("restore-move-in")
        os.rename(s, d)


def _attrs_of(path: Path) -> dict[str, int]:
    st = path.lstat()
    return {"mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "atime_ns": st.st_atime_ns,
            "mtime_ns": st.st_mtime_ns}


def _apply_attrs(dst: Path, attrs: Mapping[str, int]) -> None:
    with contextlib.suppress(OSError):
        if os.geteuid() == 0:
            os.lchown(dst, attrs["uid"], attrs["gid"])
        os.chmod(dst, attrs["mode"])
        os.utime(dst, ns=(attrs["atime_ns"], attrs["mtime_ns"]))


def _into_path(root: Path, into: str) -> Path:
    rel = Path(into)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] == RESTORE_DIR:
        raise UsageError(f"--into {into!r}: give a new directory name relative to the home directory")
    return root / rel


def _write_journal(work: Path, journal: dict[str, Any]) -> None:
    tmp = work / (JOURNAL + ".tmp")
    with open(tmp, "w") as f:
        json.dump(journal, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, work / JOURNAL)


def _rmdir_quiet(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
