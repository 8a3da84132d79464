"""The rules a member of an archive must pass before anything is written for it. Pure functions.

Every refusal is a HostileArchiveError whose message names the member and the problem. The rules that
need the file system (a parent that is a symlink, a hard link to something that is not an earlier file)
are enforced where the writing happens, in :mod:`dr.archive.target`.
"""

from __future__ import annotations

import os
import tarfile

from dr.archive.tarfmt import member_kind
from dr.archive.walk import ROOT
from dr.errors import HostileArchiveError


def shown(path: bytes) -> str:
    return repr(os.fsdecode(path))


def clean_path(raw: bytes, *, what: str = "entry") -> bytes:
    """The member name as a canonical relative path (``ROOT`` for the root itself).

    Empty and ``.`` components are dropped (``./a//b`` is ``a/b``). Refused: an empty name, a NUL byte,
    an absolute path, and any ``..`` component.
    """
    if not raw:
        raise HostileArchiveError(f"hostile archive: {what} with an empty name")
    if b"\0" in raw:
        raise HostileArchiveError(f"hostile archive: {what} {shown(raw)}: NUL byte in name")
    if raw.startswith(b"/"):
        raise HostileArchiveError(f"hostile archive: {what} {shown(raw)}: absolute path")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise HostileArchiveError(f"hostile archive: {what} {shown(raw)}: '..' component")
    return b"/".join(parts) or ROOT


def check_type(member: tarfile.TarInfo, path: bytes) -> None:
    """Refuse every member type but regular files, directories, symlinks and hard links."""
    if member_kind(member) is None:
        names = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                 tarfile.FIFOTYPE: "FIFO", tarfile.CONTTYPE: "contiguous file"}
        kind = names.get(member.type, f"type {member.type!r}")
        raise HostileArchiveError(f"hostile archive: entry {shown(path)}: {kind} not allowed in a volume "
                                  "archive")
    if path == ROOT and not member.isdir():
        raise HostileArchiveError(f"hostile archive: entry {member.name!r} names the root but is not "
                                  "a directory")


def check_symlink(path: bytes, target: bytes) -> None:
    """Refuse a symlink whose target is empty or holds a NUL (no file system can store either).

    Any other target is data, recreated exactly as it was: absolute, leaving the home, dangling
    (``~/shared -> /srv/shared``, ``env -> /opt/conda/envs/py`` are ordinary in every hub). What keeps
    this safe is that nothing is ever written *through* a symlink (:mod:`dr.archive.target` opens every
    parent with ``O_NOFOLLOW``), so a link's target is never reached during extraction.
    """
    if not target or b"\0" in target:
        raise HostileArchiveError(f"hostile archive: symlink {shown(path)}: empty or NUL in target")


def clean_hardlink(path: bytes, target: bytes) -> bytes:
    """The hard link's target as a canonical relative path; refused like a name, and if it is the root
    or the link itself."""
    cleaned = clean_path(target, what=f"hard link {shown(path)} with target")
    if cleaned in (ROOT, path):
        raise HostileArchiveError(f"hostile archive: hard link {shown(path)} -> {shown(target)}: "
                                  "not a link to an earlier file")
    return cleaned
