"""Run one container of a simulated Pod. Executed by the node agent as

    unshare --mount --propagation private -- python podexec.py PLAN.json

so that every mount below happens in a private mount namespace and never shows on the host.

PLAN is a JSON object:
  argv: [str], env: {str: str}, cwd: str|null, uid: int|null, gid: int|null, groups: [int],
  scratch: host dir (empty) used for a private tmpfs holding overlay layers and stashes,
  mounts: [{source, target, readonly, file}], expose: [dirs that must be traversable by a non-root uid]

Mount targets that do not exist (e.g. /srv/jupyterhub, /home/jovyan, /var/run/secrets/...) are created
inside an overlay mounted (in the namespace only) over their deepest existing ancestor; submounts of that
ancestor are bound back on top, so it looks as before plus the new directories. Only a target whose deepest
existing ancestor is `/` itself is created on the host (mkdir -p, an empty directory), as overlaying `/`
is not possible.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2) directly, so that /proc/self/fd/N sources and options resolve in this process."""
    enc = lambda v: None if v is None else v.encode()  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target} ({fstype or 'bind'}, {data or ''}): {os.strerror(err)}")


def mountpoints() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return out


def under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class Namespace:
    """Mount helpers. Every source and the scratch tmpfs are pinned by O_PATH file descriptors taken before
    any overlay, and used as /proc/self/fd/N, so a later overlay over an ancestor can neither hide them nor
    redirect writes into an overlay's upper layer."""

    def __init__(self, scratch: str):
        mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
        self._scratch_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
        self.scratch = f"/proc/self/fd/{self._scratch_fd}"
        self.n = 0
        self.overlaid: list[str] = []

    def _new(self, kind: str) -> str:
        self.n += 1
        d = os.path.join(self.scratch, f"{kind}{self.n}")
        os.makedirs(d)
        return d

    def overlay(self, anc: str) -> None:
        """Make `anc` writable in this namespace only (overlay), keeping its submounts visible."""
        subs = sorted({m for m in mountpoints() if under(m, anc) and m != anc}, key=len)
        top = [m for m in subs if not any(under(m, o) and m != o for o in subs)]
        stash = None
        if top:
            stash = self._new("stash")
            mount(anc, stash, None, MS_BIND | MS_REC)
        up, work = self._new("up"), self._new("work")
        mount("overlay", anc, "overlay", 0, f"lowerdir={anc},upperdir={up},workdir={work}")
        for m in top:
            src = os.path.join(stash, os.path.relpath(m, anc))
            try:
                mount(src, m, None, MS_BIND | MS_REC)
            except OSError as e:
                print(f"podexec: could not restore submount {m}: {e}", file=sys.stderr)
        self.overlaid.append(anc)

    def ensure(self, target: str, is_file: bool) -> None:
        """Create `target` (dir, or empty file) without touching the host where possible."""
        if os.path.lexists(target):
            return
        anc = target
        while not os.path.exists(anc):
            anc = os.path.dirname(anc)
        anc = os.path.realpath(anc)
        if anc != "/" and not any(under(anc, o) for o in self.overlaid):
            try:
                self.overlay(anc)
            except OSError as e:
                print(f"podexec: overlay on {anc} failed ({e}); creating {target} on the host",
                      file=sys.stderr)
        parent = os.path.dirname(target) if is_file else target
        os.makedirs(parent, exist_ok=True)
        if is_file:
            open(target, "a").close()

    def expose(self, path: str, children: list[str]) -> None:
        """Let a non-root uid traverse `path` (e.g. /root, mode 0700) to reach the interpreter below it:
        a tmpfs (0755) over `path` holding only bind mounts of `children`."""
        stash = self._new("stash")
        mount(path, stash, None, MS_BIND | MS_REC)
        mount("tmpfs", path, "tmpfs", 0, "mode=0755")
        for child in children:
            dst = os.path.join(path, child)
            src = os.path.join(stash, child)
            if os.path.isdir(src):
                os.makedirs(dst, exist_ok=True)
            else:
                open(dst, "a").close()
            mount(src, dst, None, MS_BIND | MS_REC)


def main() -> None:
    plan = json.load(open(sys.argv[1]))
    # pin every source before anything is mounted over its path
    fds = {}
    for m in plan["mounts"]:
        fds[m["target"]] = os.open(m["source"], os.O_PATH)
    runtime = {p: os.open(p, os.O_PATH) for p in plan.get("runtime", []) if os.path.isdir(p)}
    ns = Namespace(plan["scratch"])
    uid = plan.get("uid")
    if uid:
        for path, children in plan.get("expose", {}).items():
            ns.expose(path, children)
    mounts = sorted(plan["mounts"], key=lambda m: m["target"].rstrip("/").count("/"))
    targets = [m["target"] for m in mounts]
    for m in mounts:
        inside_other = any(under(m["target"], t) and m["target"] != t for t in targets)
        if not inside_other:
            ns.ensure(m["target"], m.get("file", False))
    for m in mounts:
        if not os.path.lexists(m["target"]):
            # lies inside another volume: created there, as a container runtime does
            ns.ensure(m["target"], m.get("file", False))
        mount(f"/proc/self/fd/{fds[m['target']]}", m["target"], None, MS_BIND | MS_REC)
        if m.get("readonly"):
            mount(None, m["target"], None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    # The host's venv, Python and checkout stand in for the image's programs: bind them back (read-only)
    # where a pod volume hides them.
    for path, fd in runtime.items():
        if any(under(path, m["target"]) for m in mounts):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for fd in [*fds.values(), *runtime.values()]:
        os.close(fd)
    cwd = plan.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True) if not os.path.exists(cwd) else None
    os.chdir(cwd)
    gid = plan.get("gid")
    groups = plan.get("groups") or []
    if uid is not None or gid is not None or groups:
        os.setgroups(sorted(set(groups)))
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    # credentials changed: ask again to die with the node agent
    _libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)
    os.umask(0o022)
    env = plan["env"]
    argv = plan["argv"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        sys.stderr.write(f"podexec: exec {argv[0]!r} failed: {e}\n")
        os._exit(127)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        sys.stderr.write(f"podexec: container setup failed: {e!r}\n")
        os._exit(128)
