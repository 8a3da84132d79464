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
import signal
import subprocess
import sys


def sh(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {r.stderr.strip()}")


def mountpoints() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            out.append(mp)
    return out


def under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class Namespace:
    def __init__(self, scratch: str):
        self.scratch = scratch
        self.n = 0
        self.overlaid: list[str] = []
        sh("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", scratch)

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
            sh("mount", "--rbind", anc, stash)
        up, work = self._new("up"), self._new("work")
        sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={anc},upperdir={up},workdir={work}", anc)
        for m in top:
            rel = os.path.relpath(m, anc)
            src = os.path.join(stash, rel)
            try:
                sh("mount", "--rbind", src, m)
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

    def expose(self, path: str) -> None:
        """Let a non-root uid traverse `path` (e.g. /root, mode 0700) to reach the interpreter below it."""
        # path is a dir lacking o+x; keep only what lies below it on the way to the exposed children
        stash = self._new("stash")
        sh("mount", "--rbind", path, stash)
        children = json.loads(os.environ.get("_PODEXEC_EXPOSE_CHILDREN", "{}")).get(path, [])
        sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", path)
        for child in children:
            dst = os.path.join(path, child)
            src = os.path.join(stash, child)
            if os.path.isdir(src):
                os.makedirs(dst, exist_ok=True)
            else:
                open(dst, "a").close()
            sh("mount", "--rbind", src, dst)


def main() -> None:
    plan = json.load(open(sys.argv[1]))
    ns = Namespace(plan["scratch"])
    uid = plan.get("uid")
    if uid:
        for path, children in plan.get("expose", {}).items():
            os.environ["_PODEXEC_EXPOSE_CHILDREN"] = json.dumps({path: children})
            ns.expose(path)
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
        sh("mount", "--bind", m["source"], m["target"])
        if m.get("readonly"):
            sh("mount", "-o", "remount,bind,ro", m["target"])
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
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)
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
    except Exception as e:  # noqa: BLE001 - report as a container start failure
        sys.stderr.write(f"podexec: container setup failed: {e!r}\n")
        os._exit(128)
