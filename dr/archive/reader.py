"""Extracting a volume archive into an empty staging directory, refusing anything hostile.

Each member is checked (:mod:`dr.archive.safety`) before anything is written for it, and written only
through :class:`dr.archive.target.Target`, which never follows a symlink. The caller extracts beside the
real target and swaps the staging directory in only after this returns, so on any error the real target
is untouched and the partial staging directory is discarded.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from dr.archive import safety
from dr.archive.parallel import ParallelZstdSource
from dr.archive.tarfmt import member_entry, member_kind, member_link, member_mtime_ns, member_name
from dr.archive.target import Attrs, Target
from dr.archive.tarstream import TarStream
from dr.archive.verify import VerifyReport, verify_archive
from dr.archive.walk import ROOT
from dr.errors import HostileArchiveError, IntegrityError, UsageError
from dr.model import IndexEntry
from dr.util.testhooks import pause_at

__all__ = ["ExtractStats", "VerifyReport", "extract_archive", "verify_archive"]

_PROGRESS_EVERY = 0.25


@dataclass
class ExtractStats:
    """What :func:`extract_archive` did."""

    files: int = 0  # regular files written (hard links not counted)
    entries: int = 0  # entries extracted, the root directory included
    bytes: int = 0  # bytes of file content written
    skipped: int = 0  # entries not selected


def extract_archive(src: BinaryIO, dest: Path | int, *, select: Callable[[IndexEntry], bool] | None = None,
                    index: Mapping[bytes, IndexEntry] | None = None, same_owner: bool | None = None,
                    map_owner: Callable[[int, int], tuple[int, int]] | None = None, label: str = "",
                    progress: Callable[[int, int], None] | None = None,
                    compressed: bool = True) -> ExtractStats:
    """Extract the zstd-compressed tar ``src`` into ``dest``, an existing empty directory (a path, or an
    open directory descriptor named ``label`` in messages).

    Restores regular files (all-zero 64 KiB stretches become holes, so sparse files stay sparse),
    directories, symlinks (verbatim, never followed) and hard links (as hard links), with modes, mtimes
    (nanoseconds) and, when ``same_owner`` (default: when running as root), numeric uid/gid (mapped by
    ``map_owner(uid, gid)`` when given); setuid/setgid bits are cleared (:mod:`dr.archive.target`);
    symlinks keep their targets whatever they are (absolute, outside, dangling). The archive's root entry
    (``./``) gives ``dest`` itself its mode, owner and mtime. Directory modes and mtimes are applied last.
    ``src`` is read through to its EOF (by a producer thread of :class:`dr.archive.parallel.ParallelZstdSource`,
    which decompresses the archive's frames in parallel; ``src`` is read by that one thread only, and not
    after this returns). With ``compressed=False``, ``src`` is a plain tar (as
    :func:`dr.archive.seek.ranged_tar` makes), read in the caller's thread.

    ``select(entry)`` picks the entries to extract (the entry comes from ``index`` when given, else from
    the tar header, without sha256). Parent directories of a picked entry are created even when not
    picked, with their attributes from the archive. A picked hard link whose first name is not picked
    needs ``index`` (to keep the content on the way); without it, raises UsageError.

    With ``index``, every extracted file's size and SHA-256 must match it, every member must be in it, and
    every (selected) index entry must have been seen; otherwise IntegrityError naming the path. With
    ``index`` and ``compressed=False`` (a ranged read, which the whole-artifact SHA-256 does not cover),
    every member's tar header must also agree with its MAC-covered index entry (type, size, mode, uid,
    gid, mtime, link target; the name is the lookup key), before anything is written for it; otherwise
    IntegrityError naming the entry and the field.

    Raises HostileArchiveError, before writing the member, for: an absolute path, a ``..`` component,
    a parent that is a symlink (a write through a link), a hard link to anything but an earlier file
    inside ``dest``, a symlink with an empty or NUL target, a device, FIFO or any other member type, and
    an entry that would overwrite a directory. IntegrityError for corrupt or truncated
    data. DeploymentError for a full disk (naming the file); other OSErrors propagate. ``progress(files,
    bytes)`` is called every quarter second or so, and at the end.
    """
    if same_owner is None:
        same_owner = os.geteuid() == 0
    with _source(src, compressed) as plain:
        return _extract(plain, dest, select=select, index=index, same_owner=same_owner, map_owner=map_owner,
                        label=label, progress=progress, check_headers=index is not None and not compressed)


@contextmanager
def _source(src: BinaryIO, compressed: bool) -> Iterator[BinaryIO]:
    """The tar bytes of ``src``: a compressed archive's frames are decompressed in parallel."""
    if not compressed:
        yield src
        return
    parallel = ParallelZstdSource(src, what="archive", workers=min(4, os.cpu_count() or 1))
    try:
        yield cast(BinaryIO, parallel)
    finally:
        parallel.close()


def _extract(src: BinaryIO, dest: Path | int, *, select: Callable[[IndexEntry], bool] | None,
             index: Mapping[bytes, IndexEntry] | None, same_owner: bool,
             map_owner: Callable[[int, int], tuple[int, int]] | None, label: str,
             progress: Callable[[int, int], None] | None, check_headers: bool) -> ExtractStats:
    stats = ExtractStats()
    seen: set[bytes] = set()
    pending: dict[bytes, Attrs] = {}  # unselected directories, for parents of selected entries
    # Content of unselected files that selected hard links need, kept under a private directory.
    stash_needs = _stash_needs(select, index)
    stash_dir = b".jdr-links-" + secrets.token_hex(4).encode()
    stashed: dict[bytes, bytes] = {}
    last = time.monotonic()
    stream = TarStream(src, compressed=False)
    with Target(dest, same_owner=same_owner, implied=pending.get, map_owner=map_owner, label=label) as target:
        for member in stream:
            path = safety.clean_path(member_name(member))
            safety.check_type(member, path)
            entry = _entry_for(member, path, index)
            if check_headers:
                _check_header(member, path, entry)
            if index is not None:  # only needed for the completeness check against the index
                seen.add(path)
            if select is not None and path != ROOT and not select(entry):
                stats.skipped += 1
                if entry.type == "dir":
                    pending[path] = _attrs(member)
                elif path in stash_needs:
                    stashed[path] = stash_dir + b"/" + str(len(stashed)).encode()
                    _extract_file(stream, member, stashed[path], entry, index, target, stats)
                continue
            _extract_one(stream, member, path, entry, index, target, stats, stashed, select is not None)
            stats.entries += 1
            pause_at("restore-extract", stats.entries)
            if progress is not None and time.monotonic() - last >= _PROGRESS_EVERY:
                progress(stats.files, stats.bytes)
                last = time.monotonic()
        if stashed:
            target.remove_tree(stash_dir)
        if index is not None:
            _check_all_seen(index, seen, select)
        target.finish()
    if progress is not None:
        progress(stats.files, stats.bytes)
    return stats


def _stash_needs(select: Callable[[IndexEntry], bool] | None,
                 index: Mapping[bytes, IndexEntry] | None) -> set[bytes]:
    if select is None or index is None:
        return set()
    needs = set()
    for e in index.values():
        if e.type == "hardlink" and select(e):
            first = index.get(e.link)
            if first is not None and not select(first):
                needs.add(e.link)
    return needs


def _attrs(member: tarfile.TarInfo) -> Attrs:
    return Attrs(mode=member.mode & 0o7777, uid=member.uid, gid=member.gid, mtime_ns=member_mtime_ns(member))


def _entry_for(member: tarfile.TarInfo, path: bytes, index: Mapping[bytes, IndexEntry] | None) -> IndexEntry:
    if index is None:
        return member_entry(member, path, member_link(member))
    found = index.get(path)
    if found is None:
        raise IntegrityError(f"archive entry {safety.shown(path)} is not in the index")
    kind = member_kind(member)  # the member's type was checked (safety.check_type)
    if found.type != kind:
        raise IntegrityError(f"archive entry {safety.shown(path)} is a {kind}, the index says {found.type}")
    return found


def _check_header(member: tarfile.TarInfo, path: bytes, entry: IndexEntry) -> None:
    """Refuse a member whose header differs from its index entry (the entry's type was checked)."""
    link = member_link(member)
    if member.islnk():
        link = safety.clean_hardlink(path, link)
    own = member_entry(member, path, link)
    wrong = [name for name in ("mode", "uid", "gid", "link") if getattr(own, name) != getattr(entry, name)]
    if own.type == "file" and own.size != entry.size:
        wrong.append("size")
    # The index keeps float seconds; a header made from it (seek.ranged_tar) may round by a nanosecond.
    if abs(own.mtime - entry.mtime) > 1e-6:
        wrong.append("mtime")
    if wrong:
        raise IntegrityError(f"archive entry {safety.shown(path)}: its tar header does not match the index "
                             f"({', '.join(wrong)} differ); the archive was altered")


def _extract_one(stream: TarStream, member: tarfile.TarInfo, path: bytes, entry: IndexEntry,
                 index: Mapping[bytes, IndexEntry] | None, target: Target, stats: ExtractStats,
                 stashed: Mapping[bytes, bytes], selecting: bool) -> None:
    if member.isdir():
        target.make_dir(path, _attrs(member))
    elif member.issym():
        link = member_link(member)
        safety.check_symlink(path, link)
        target.make_symlink(path, link, _attrs(member))
    elif member.islnk():
        first = safety.clean_hardlink(path, member_link(member))
        try:
            target.make_hardlink(path, stashed.get(first, first))
        except HostileArchiveError:
            if selecting and index is None:
                raise UsageError(f"{safety.shown(path)} is a hard link to {safety.shown(first)}, which the "
                                 "selection leaves out; select both, or restore with the index") from None
            raise
    else:
        _extract_file(stream, member, path, entry, index, target, stats)


def _extract_file(stream: TarStream, member: tarfile.TarInfo, path: bytes, entry: IndexEntry,
                  index: Mapping[bytes, IndexEntry] | None, target: Target, stats: ExtractStats) -> None:
    digest = hashlib.sha256()

    def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            digest.update(chunk)
            stats.bytes += len(chunk)
            yield chunk

    target.make_file(path, _attrs(member), member.size, counted(stream.chunks(member)))
    stats.files += 1
    if index is not None and (entry.size != member.size or entry.sha256 != digest.hexdigest()):
        raise IntegrityError(f"{entry.name!r}: content does not match the index (size {member.size}, "
                             f"index says {entry.size}; sha256 {digest.hexdigest()[:12]}…, index says "
                             f"{entry.sha256[:12]}…)")


def _check_all_seen(index: Mapping[bytes, IndexEntry], seen: set[bytes],
                    select: Callable[[IndexEntry], bool] | None) -> None:
    missing = [e.name for e in index.values()
               if e.path not in seen and (select is None or select(e))]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise IntegrityError(f"the archive lacks {len(missing)} entries of its index: "
                             f"{', '.join(repr(m) for m in missing[:5])}{more}")
