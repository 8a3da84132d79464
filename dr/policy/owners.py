"""Who owns what a restore ``--as`` another user writes (pure).

Restoring alice's backup into bob's home must leave bob's home owned by bob, and must not hand anyone a
foothold in it that the backup did not give them. The rule, applied to every entry's uid and gid:

- root (0) stays root: an administrator's root-owned file stays as locked as it was (its setuid/setgid
  bits are cleared on every restore anyway: dr.archive.target);
- every other owner — the backed-up home's owner, and any third user or group that owned something in
  it — becomes the target home's owner and group. A third user gets nothing in bob's home.

A user's own restore (no ``--as``) keeps the archive's numeric owners as they were (when jdr runs as
root); ownership is then exactly what the backed-up home had.
"""

from __future__ import annotations

from collections.abc import Callable

OwnerMap = Callable[[int, int], tuple[int, int]]


def owner_map(target: tuple[int, int]) -> OwnerMap:
    """The mapping of a restore into a home owned by ``target`` (uid, gid): root stays root, every other
    uid becomes ``target``'s uid and every other gid its gid."""
    t_uid, t_gid = target

    def mapped(uid: int, gid: int) -> tuple[int, int]:
        return (0 if uid == 0 else t_uid), (0 if gid == 0 else t_gid)

    return mapped
