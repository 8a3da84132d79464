"""Whether a mover running as one user can do its job on a volume, decided inside the mover before it acts.

Movers run as the volume's owner (``runAsUser``/``runAsGroup``, no capabilities, ``runAsNonRoot``), which is
what Pod Security Admission ``restricted`` accepts. That works when the volume has one owner — the common
z2jh case: everything belongs to ``singleuser.uid`` (1000) and group ``fsGid`` (100). Before touching the
volume, a mover checks that assumption on the volume itself and answers one of:

- fine: it can read (backup) or write and own (restore) everything as itself;
- another single owner: the volume root and every entry belong to ``(uid, gid)`` — run again as them;
- several owners: some entry is not readable (backup) or not ownable (restore) as any one user — run
  again as uid 0 with the few capabilities that need (the documented exception; the jdr process logs it).

Nothing here writes. The checks are one ``lstat`` per entry, cheap next to reading or writing the data.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dr.deployments.volume_swap import RESTORE_DIR
from dr.model import IndexEntry


@dataclass(frozen=True)
class Verdict:
    """``ok``: go ahead as the current user. Else ``owner`` is the one user to run as instead, or None
    when the volume holds several owners (privileges needed); ``reason`` names an offending entry."""

    ok: bool
    owner: tuple[int, int] | None = None
    reason: str = ""

    def to_result(self) -> dict[str, object]:
        """The mover's answer when it cannot do its job as itself (see :mod:`dr.deployments.kubernetes.mover`)."""
        return {"status": "wrong-user", "owner": list(self.owner) if self.owner else None, "reason": self.reason}


OK = Verdict(True)


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every entry under ``root`` (``.`` first), jdr's own restore area skipped."""
    # stat, not lstat: the root may be /proc/self/fd/N (a home opened safely: .safe_home), a link to itself
    yield ".", root.stat()
    stack = [(root, "")]
    while stack:
        d, rel = stack.pop()
        try:
            entries = list(os.scandir(d))
        except PermissionError:
            continue  # reported by the readability check of the directory itself
        for e in entries:
            if not rel and e.name == RESTORE_DIR:
                continue
            path = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            yield path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(e.path), path))


def _can(st: os.stat_result, uid: int, groups: set[int], want: int) -> bool:
    """Whether ``uid`` (with ``groups``) has the ``want`` bits (r=4, w=2, x=1) on an entry by its mode."""
    mode = st.st_mode
    if st.st_uid == uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def identity() -> tuple[int, set[int]]:
    """This process's uid and every group it is in."""
    return os.geteuid(), {os.getegid(), *os.getgroups()}


def _single_owner(entries: Iterable[tuple[str, int, int]]) -> tuple[int, int] | None:
    owners = {(uid, gid) for _, uid, gid in entries}
    return next(iter(owners)) if len(owners) == 1 else None


def check_readable(root: Path, uid: int, groups: set[int]) -> Verdict:
    """Can ``uid`` read every file and list every directory under ``root`` (a backup)?"""
    if uid == 0:
        return OK
    seen: list[tuple[str, int, int]] = []
    blocked = ""
    for path, st in _walk(root):
        seen.append((path, st.st_uid, st.st_gid))
        if stat.S_ISLNK(st.st_mode) or blocked:
            continue
        want = 5 if stat.S_ISDIR(st.st_mode) else 4
        if not _can(st, uid, groups, want):
            blocked = f"{path} (owner {st.st_uid}:{st.st_gid}, mode {stat.S_IMODE(st.st_mode):o})"
    if not blocked:
        return OK
    owner = _single_owner(seen)
    if owner is not None and owner[0] != uid:
        return Verdict(False, owner, f"the volume belongs to {owner[0]}:{owner[1]} (its root and every entry)")
    return Verdict(False, None, f"the volume holds files that uid {uid} cannot read: {blocked}")


def index_owners(entries: Iterable[IndexEntry]) -> list[tuple[str, int, int]]:
    """(path, uid, gid) of index entries."""
    return [(e.name, e.uid, e.gid) for e in entries]


def tree_owners(root: Path) -> list[tuple[str, int, int]]:
    """(path, uid, gid) of every entry of a mounted tree (the source of a copy)."""
    return [(p, st.st_uid, st.st_gid) for p, st in _walk(root)]


def check_writable(root: Path, owners: Iterable[tuple[str, int, int]], uid: int, groups: set[int]) -> Verdict:
    """Can ``uid`` restore entries of these ``owners`` (path, uid, gid) into ``root`` with their recorded
    owners, and move the current contents aside (a restore)? The volume root's own owner is the
    provisioner's (and the kubelet's, with ``fsGroup``) and is left as is."""
    if uid == 0:
        return OK
    recorded = [(p, u, g) for p, u, g in owners if p != "."]
    foreign = next(((p, u, g) for p, u, g in recorded if u != uid or g not in groups), None)
    current = [(p, st.st_uid, st.st_gid) for p, st in _walk(root) if p != "."]
    occupied = next(((p, u, g) for p, u, g in current if u != uid), None)
    root_st = root.lstat()
    if foreign is None and occupied is None and _can(root_st, uid, groups, 3):
        return OK
    owner = _single_owner([*recorded, *current])
    if owner is not None and (owner[0] != uid or owner[1] not in groups):
        return Verdict(False, owner, f"the files belong to {owner[0]}:{owner[1]}")
    if foreign is not None:
        return Verdict(False, None, f"the backup holds files of several owners ({foreign[0]} belongs to "
                                    f"{foreign[1]}:{foreign[2]}), which only a privileged mover can put back")
    if occupied is not None:
        return Verdict(False, None, f"the volume holds files of several owners ({occupied[0]} belongs to "
                                    f"{occupied[1]}:{occupied[2]}), which only a privileged mover can move aside")
    return Verdict(False, None, f"the volume root (owner {root_st.st_uid}:{root_st.st_gid}, mode "
                                f"{stat.S_IMODE(root_st.st_mode):o}) is not writable as {uid}")
