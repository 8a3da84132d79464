"""Where a restore keeps its state inside the volume, and how that state is found again and trusted.

The state of one restore is a directory ``.jdr-restore-<16 random hex digits>`` at the volume's root,
created fresh (``mkdir`` fails on a name that exists, so a planted name is never reused), mode 0700, owned
by the restoring process (root on a one-machine hub and in mover pods), and held open as a directory
descriptor for the whole restore. It holds:

- ``staging/``: the archive is extracted here (same file system as the home, so the swap is renames);
- ``replaced/``: the entries the swap moved out of the way, handed over to the user at the end;
- ``journal.json``: written once staging is complete; the swap rolls forward from it after a kill.

Why inside the volume and not in a state directory elsewhere: a mover pod sees only the volume, and the
re-run that finishes a killed restore may run in another pod; renames need the same file system. Why
this is safe although the user owns the parent: the user cannot create a directory owned by root, cannot
enter or write into a root-owned 0700 one, and every use re-checks owner, type and mode through a
descriptor opened with ``O_NOFOLLOW``. Renaming the directory away only hides it from the next run
(the user's own loss; nothing is followed). The journal holds no names or paths at all: the entries it
acts on are the fixed names above, found in the verified directory, and the home's own entries, found by
listing the home's descriptor. When jdr runs as the volume's owner (a non-root mover), the checks still
hold but cannot tell jdr's directory from one the user made; then jdr has no privilege the user lacks.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dr.archive.walk import LEGACY_STATE_NAME, STATE_NAME
from dr.errors import DeploymentError
from dr.util import fsops

log = logging.getLogger(__name__)

PREFIX = ".jdr-restore-"
STAGING = "staging"
REPLACED = "replaced"
JOURNAL = "journal.json"
FORMAT = "jdr-restore-journal"
_JOURNAL_MAX = 64 << 10
_PHASES = ("move-out", "move-in", "handover")
_MODES = ("full", "paths")
_ATTR_KEYS = ("mode", "uid", "gid", "atime_ns", "mtime_ns")


@dataclass(frozen=True)
class Journal:
    """What a swap must finish: validated, holding no names or paths."""

    run: str
    mode: str  # full: every entry of the home is replaced; paths: staging is merged in
    phase: str  # move-out, move-in, handover
    root_attrs: dict[str, int]  # the home's own attributes as restored

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": 1, "run": self.run, "mode": self.mode,
                           "phase": self.phase, "root_attrs": self.root_attrs}).encode()

    def at(self, phase: str) -> Journal:
        return Journal(self.run, self.mode, phase, self.root_attrs)


class StateDir:
    """One restore's state directory, open. Close it (or use it as a context manager) when done."""

    def __init__(self, home_fd: int, name: str, fd: int) -> None:
        self.home_fd = home_fd  # borrowed
        self.name = name
        self.fd = fd

    def __enter__(self) -> StateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check(self) -> None:
        """Raise DeploymentError unless the directory is still what jdr made (owner, type, mode)."""
        _check_ours(os.fstat(self.fd), self.name)

    def make_dir(self, name: str) -> int:
        """Create the fresh private directory ``name`` here and return it open."""
        os.mkdir(name, 0o700, dir_fd=self.fd)
        return fsops.open_dir(name, self.fd)

    def open_sub(self, name: str) -> int | None:
        """Open ``name`` (``staging`` or ``replaced``) here, or None if absent; refuses a non-directory."""
        try:
            return fsops.open_dir(name, self.fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise DeploymentError(f"restore state {self.name}/{name} is not a directory") from None
            raise

    def write_journal(self, journal: Journal) -> None:
        """Replace the journal atomically: a fresh temporary file (O_EXCL, random name) synced, then
        renamed over ``journal.json`` inside this private directory."""
        self.check()
        tmp = f"{JOURNAL}.{secrets.token_hex(8)}"
        fsops.write_new_file(tmp, self.fd, journal.to_json())
        os.rename(tmp, JOURNAL, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        os.fsync(self.fd)

    def read_journal(self) -> Journal | None:
        """The journal, or None if there is none. Raises DeploymentError for a journal that is not a
        plain file owned by jdr, or that does not parse as one jdr wrote."""
        self.check()
        try:
            fd = os.open(JOURNAL, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DeploymentError(f"restore journal {self.name}/{JOURNAL}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1 \
                    or st.st_size > _JOURNAL_MAX:
                raise DeploymentError(f"restore journal {self.name}/{JOURNAL} is not a file jdr wrote")
            raw = os.read(fd, _JOURNAL_MAX + 1)
        finally:
            os.close(fd)
        return parse_journal(raw, f"{self.name}/{JOURNAL}")

    def remove_journal(self) -> None:
        try:
            os.unlink(JOURNAL, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        """Delete the whole state directory (by descriptor, following nothing) and close it."""
        for name in os.listdir(self.fd):
            fsops.remove_tree_at(name, self.fd)
        self.close()
        try:
            os.rmdir(self.name, dir_fd=self.home_fd)
        except FileNotFoundError:  # renamed away by the user: the empty directory stays where they put it
            log.warning("restore state %s was moved away; leaving the empty directory", self.name)
        except OSError as e:
            log.warning("cannot remove restore state %s: %s", self.name, e.strerror)


def parse_journal(raw: bytes, where: str) -> Journal:
    """Validate a journal's bytes; raises DeploymentError naming ``where`` and what is wrong."""
    def bad(why: str) -> DeploymentError:
        return DeploymentError(f"restore journal {where} is malformed ({why})",
                               hint="it was not written by this version of jdr; move the directory aside "
                                    "and restore again")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise bad("not a jdr restore journal of version 1")
    run, mode, phase, attrs = doc.get("run"), doc.get("mode"), doc.get("phase"), doc.get("root_attrs")
    if not isinstance(run, str) or not run.isprintable() or len(run) > 200:
        raise bad("run")
    if mode not in _MODES:
        raise bad("mode")
    if phase not in _PHASES:
        raise bad("phase")
    if not isinstance(attrs, dict) or set(attrs) != set(_ATTR_KEYS) \
            or not all(type(v) is int and v >= 0 for v in attrs.values()):
        raise bad("root_attrs")
    return Journal(run=run, mode=mode, phase=phase, root_attrs=dict(attrs))


def _check_ours(st: os.stat_result, name: str) -> None:
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
        raise DeploymentError(f"restore state {name} is not a directory jdr made (owner {st.st_uid}, mode "
                              f"{stat.S_IMODE(st.st_mode):o}); refusing to use it")


def create(home_fd: int) -> StateDir:
    """A fresh state directory at the root of the home open as ``home_fd``."""
    for _ in range(100):
        name = PREFIX + secrets.token_hex(8)
        try:
            os.mkdir(name, 0o700, dir_fd=home_fd)
        except FileExistsError:
            continue  # planted, or (1 in 2^64) taken: never reused
        try:
            fd = fsops.open_dir(name, home_fd)
        except OSError as e:  # swapped for a link or a file between mkdir and open
            raise DeploymentError(f"restore state {name} was replaced while it was being created "
                                  f"({e.strerror})", hint="stop whatever changes the home, then retry") from None
        try:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) != 0o700:  # a umask cannot widen 0700, but a default ACL might
                os.fchmod(fd, 0o700)
            _check_ours(os.fstat(fd), name)
        except BaseException:
            os.close(fd)
            raise
        return StateDir(home_fd, name, fd)
    raise DeploymentError("cannot create a restore state directory (every name tried exists)")


def find(home_fd: int, *, owners: tuple[int, ...] = ()) -> Iterator[StateDir]:
    """Open every state directory jdr left at the root of the home (name, owner, type and mode checked
    through a descriptor opened without following links); entries that merely look like one are skipped.
    ``owners``: also accept directories of these owners (to *detect* root's state from a non-root
    process; such a directory cannot be acted on). Each yielded StateDir must be closed by the caller."""
    for raw in sorted(os.listdir(home_fd)):
        name = os.fsencode(raw)
        if name == LEGACY_STATE_NAME:
            st = fsops.lstat_at(raw, home_fd)
            if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                log.warning("%s holds the restore state of an earlier jdr version (previous-* copies); it is "
                            "left alone: hand it to the user or delete it", raw)
            continue
        if not STATE_NAME.fullmatch(name):
            continue
        try:
            fd = fsops.open_dir(raw, home_fd)
        except OSError:
            continue  # a link or a file named like ours: the user's, not ours
        st = os.fstat(fd)
        if not (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
                and (st.st_uid == os.geteuid() or st.st_uid in owners)):
            os.close(fd)
            continue
        yield StateDir(home_fd, raw, fd)


def unfinished(home_fd: int) -> str | None:
    """The name of a state directory whose journal says a swap is half done, or None. A root-owned state
    that this (non-root) process cannot read counts as half done: nothing proves otherwise."""
    for state in find(home_fd, owners=(0,)):
        with state:
            if os.fstat(state.fd).st_uid != os.geteuid():
                if _has_journal_unverified(state.fd):
                    return state.name
                continue
            try:
                if state.read_journal() is not None:
                    return state.name
            except DeploymentError:
                return state.name
    return None


def _has_journal_unverified(fd: int) -> bool:
    try:
        return os.stat(JOURNAL, dir_fd=fd, follow_symlinks=False) is not None
    except FileNotFoundError:
        return False
    except PermissionError:
        return True


def attrs_of(st: os.stat_result) -> dict[str, Any]:
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "atime_ns": st.st_atime_ns,
            "mtime_ns": st.st_mtime_ns}
