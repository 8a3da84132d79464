"""Restore plans: what a restore will do, decided from the manifest alone (pure; printed by --dry-run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dr.errors import NotFoundError, UsageError
from dr.model import Manifest, VolumeItem


@dataclass(frozen=True)
class VolumeStep:
    item: VolumeItem
    target_user: str | None
    target_server: str = ""
    paths: tuple[str, ...] = ()
    into: str | None = None

    def describe(self) -> str:
        what = "files matching " + ", ".join(self.paths) if self.paths else "the whole volume"
        src = self.item.label
        tgt = self.target_user if self.target_user is not None else src
        if self.target_server:
            tgt = f"{tgt}:{self.target_server}"
        where = f"into {tgt}'s home under {self.into}/" if self.into else (
            f"replacing {tgt}'s current files" if not self.paths else f"over {tgt}'s current files")
        size = f"{self.item.files} files, {self.item.bytes} bytes"
        return f"restore {what} of {src} ({size}) {where}; replaced files are kept aside"

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.item.user, "server": self.item.server, "key": self.item.key,
                "target_user": self.target_user, "target_server": self.target_server,
                "paths": list(self.paths), "into": self.into, "files": self.item.files,
                "bytes": self.item.bytes, "method": self.item.method}


@dataclass(frozen=True)
class RestorePlan:
    run: str
    hub: bool = False
    hub_secret: bool = False
    volumes: tuple[VolumeStep, ...] = ()
    stop_servers: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        out = [f"Restore plan from run {self.run}:"]
        if self.hub:
            out.append("  - stop the hub, replace its database (the current one is kept beside it), "
                       "start the hub")
        if self.hub_secret:
            out.append("  - replace the hub Secret (the current one is kept as a copy)")
        for user, server in self.stop_servers:
            out.append(f"  - stop the server of {user}{':' + server if server else ''} if it is running")
        for step in self.volumes:
            out.append(f"  - {step.describe()}")
        out += [f"  ! {w}" for w in self.warnings]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "hub": self.hub, "hub_secret": self.hub_secret,
                "volumes": [v.to_dict() for v in self.volumes],
                "stop_servers": [{"user": u, "server": s} for u, s in self.stop_servers],
                "warnings": list(self.warnings)}


def plan_user_restore(manifest: Manifest, user: str, *, server: str = "", as_user: str | None = None,
                      paths: tuple[str, ...] = (), into: str | None = None) -> RestorePlan:
    """Plan restoring one user's volume. Raises NotFoundError if the run has no usable item for them."""
    item = manifest.volume_for(user, server)
    if item is None:
        known = sorted({v.user for v in manifest.volumes if v.user is not None})
        raise NotFoundError(f"run {manifest.run} has no volume of user {user!r}"
                            f"{' (server ' + server + ')' if server else ''}",
                            hint=f"users in this run: {', '.join(known[:20]) or 'none'}")
    if item.status == "absent":
        raise NotFoundError(f"run {manifest.run} recorded no home of {user!r}: it did not exist then (absent)",
                            hint="`jdr list --user NAME` shows the runs that hold a home of that user")
    if item.status != "ok":
        raise NotFoundError(f"run {manifest.run} failed to back up {user!r}: {item.error}",
                            hint="pick an earlier run with --run or --at")
    check_paths(paths)
    if as_user is not None:
        check_username(as_user, "--as")
    if into is not None:
        check_into(into)
    target = as_user if as_user is not None else user
    step = VolumeStep(item=item, target_user=target, target_server=server, paths=paths, into=into)
    return RestorePlan(run=manifest.run, volumes=(step,), stop_servers=((target, server),))


# --- checks of what the operator typed (pure; before anything is done) ------------------------------

#: The longest name one directory entry may have on Linux file systems (bytes), and the longest path.
NAME_MAX = 255
PATH_MAX = 4095
#: The directory jdr keeps its restore state in, inside a volume: never a restore's destination.
RESTORE_DIR = ".jdr-restore"


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch == " " for ch in text)


def check_username(name: str, option: str) -> None:
    """Refuse a user name that cannot name one home: empty (an unset shell variable), ``.``/``..``,
    containing ``/``, NUL or control characters, surrounding spaces, or longer than a file name may be.
    Raises UsageError naming ``option`` and the problem."""
    problem = None
    if not name.strip():
        problem = "an empty user name (is a shell variable unset?)"
    elif name in (".", ".."):
        problem = f"{name!r} is not a user name"
    elif "/" in name or "\0" in name:
        problem = "a user name cannot contain '/' or NUL"
    elif not _printable(name) or name != name.strip():
        problem = "a user name cannot contain control characters or surrounding spaces"
    elif len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        problem = f"a user name longer than {NAME_MAX} bytes cannot name a home directory"
    if problem:
        raise UsageError(f"{option} {name!r}: {problem}", hint="give the name of an existing hub user")


def check_into(into: str) -> None:
    """Refuse an ``--into`` that is not a new relative directory inside the home: empty, absolute, with a
    ``..`` component, inside jdr's own ``.jdr-restore``, with NUL or control characters, or a name longer
    than file systems allow. Raises UsageError naming the problem."""
    parts = [p for p in into.split("/") if p not in ("", ".")]
    problem = None
    if not parts:
        problem = "an empty directory name"
    elif into.startswith("/"):
        problem = "an absolute path; give a directory relative to the home"
    elif ".." in parts:
        problem = "'..' is not allowed; give a directory inside the home"
    elif parts[0] == RESTORE_DIR:
        problem = f"{RESTORE_DIR} is jdr's own"
    elif "\0" in into or not _printable(into):
        problem = "control characters are not allowed"
    elif any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        problem = f"a directory name longer than {NAME_MAX} bytes"
    elif len(into.encode("utf-8", "surrogateescape")) > PATH_MAX:
        problem = f"longer than {PATH_MAX} bytes"
    if problem:
        raise UsageError(f"--into {into!r}: {problem}",
                         hint="give a new directory name relative to the home, e.g. --into restored")


def check_paths(paths: tuple[str, ...]) -> None:
    """Refuse ``--path`` globs that cannot match anything: empty, or with NUL. (Whether a glob is well
    formed and matches something in the run is checked against the index: dr.operations.restore.)"""
    for glob in paths:
        if not glob.strip() or glob.strip("/.") == "":
            raise UsageError(f"--path {glob!r}: an empty glob", hint="name files relative to the home")
        if "\0" in glob:
            raise UsageError(f"--path {glob!r}: NUL is not allowed")


def plan_full_restore(manifest: Manifest, *, include_secret: bool) -> RestorePlan:
    """Plan a full disaster recovery: the hub and every volume of the run that was backed up."""
    warnings = []
    if manifest.hub is None or manifest.hub.db is None:
        raise NotFoundError(f"run {manifest.run} holds no hub database", hint="pick another run")
    steps = []
    for item in manifest.volumes:
        if item.status == "absent":
            warnings.append(f"{item.label} had no home in this run; whatever is there now is left as it is")
            continue
        if item.status != "ok":
            warnings.append(f"{item.label} failed in this run and will not be restored: {item.error}")
            continue
        steps.append(VolumeStep(item=item, target_user=item.user, target_server=item.server))
    if manifest.options.get("users"):
        warnings.append("this run backed up only some users: " + ", ".join(manifest.options["users"]))
    return RestorePlan(run=manifest.run, hub=True,
                       hub_secret=include_secret and manifest.hub.secret is not None,
                       volumes=tuple(steps), warnings=tuple(warnings))


def plan_hub_restore(manifest: Manifest, *, include_secret: bool) -> RestorePlan:
    if manifest.hub is None or manifest.hub.db is None or manifest.hub.status != "ok":
        raise NotFoundError(f"run {manifest.run} holds no usable hub database", hint="pick another run")
    return RestorePlan(run=manifest.run, hub=True,
                       hub_secret=include_secret and manifest.hub.secret is not None)
