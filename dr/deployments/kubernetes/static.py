"""Homes on one shared volume (z2jh ``singleuser.storage.type: static``): each home a volume item.

A user's home is the subdirectory KubeSpawner mounts with ``subPath`` (:mod:`.subpath`). Restoring it
mounts the shared PVC *with that subPath* at the mover's data directory, so the mover
sees exactly what a per-user PVC would show it, and nothing of the siblings: a restore of alice cannot
write, rename into, or follow a link into bob's directory, because bob's directory is not in alice's
mover at all (the kubelet resolves the subPath inside the volume and refuses one that leaves it).

- Which homes exist is read by one listing mover per run (``jdr agent list-dirs``) from the directories
  that hold homes (the parents of the expanded subPaths). A hub user whose directory does not exist yet
  has no volume (reported, as a user without a PVC); a directory entry that is a symlink is never a home
  (reported, not followed); directories in those parents that belong to no hub user are **orphans**,
  backed up under their path (``lost+found`` and names starting with ``.``, such as NFS ``.snapshot``
  directories, are listed in the log and not backed up).
- Several servers of one user that expand to the same directory (``{username}`` with named servers)
  are one item: the user's default server's.
- Running: a pod (not jdr's) that mounts the shared PVC with the home's subPath.
- fsGroup is never set on movers of the shared volume: the kubelet would apply it to the whole volume.
- Backups with ``archive`` are batched (:mod:`.batch`): a mover mounts the shared PVC once, whole and
  read-only, and opens each home safely (:mod:`.safe_home`); a home archived by a mover of its own (the
  batch's fallback) is mounted with its subPath.
- Snapshot methods take ONE VolumeSnapshot of the shared PVC per run, recorded in every home's item
  (:mod:`.static_snapshots`).
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dr.deployments.base import Volume, VolumeRestore, VolumeRestoreResult
from dr.deployments.kubernetes.api import PVCS, Obj
from dr.deployments.kubernetes.discovery import Mapping
from dr.deployments.kubernetes.objects import (
    DATA_MOUNT,
    MANAGED_BY,
    Mount,
    MoverSpec,
    as_owner,
    pod_is_active,
    pvc_record,
    short_name,
)
from dr.deployments.kubernetes.storage_layout import StorageLayout
from dr.deployments.kubernetes.subpath import expand
from dr.errors import DeploymentError, UsageError
from dr.hubdb.info import DbInfo
from dr.model import volume_key
from dr.util.timefmt import iso

if TYPE_CHECKING:
    from dr.deployments.kubernetes.deployment import KubernetesDeployment
    from dr.repository.repository import Repository

log = logging.getLogger(__name__)

SKIPPED = ("lost+found",)


def home_subpath(layout: StorageLayout, user: str, server: str = "", namespace: str = "") -> str:
    return expand(layout.subpath, user, server, scheme=layout.scheme, namespace=namespace)


def homes_of(layout: StorageLayout, db: DbInfo, namespace: str = "") -> dict[str, tuple[str, str]]:
    """subPath -> (user, server) of every home the hub's users have, one per directory (pure)."""
    homes: dict[str, tuple[str, str]] = {}
    pairs = {(u, "") for u in db.users} | {(s.user, s.server) for s in db.servers}
    for user, server in sorted(pairs):  # the default server ("") first
        sub = home_subpath(layout, user, server, namespace)
        homes.setdefault(sub, (user, server))
    return homes


def parents(homes: dict[str, tuple[str, str]]) -> list[str]:
    """The directories whose entries are (or could be) homes."""
    return sorted({posixpath.dirname(sub) or "." for sub in homes} or {"."})


def map_static(layout: StorageLayout, pvc: Obj, db: DbInfo, listing: dict[str, dict[str, str]],
               running: set[str], namespace: str = "") -> Mapping:
    """Join the hub's users with the directories found on the shared volume (pure; see the module doc).

    ``listing`` is the listing mover's answer (parent -> {name: "dir"|"link"|"other"}); ``running`` the
    subPaths that a server pod mounts.
    """
    record = pvc_record(pvc)
    homes = homes_of(layout, db, namespace)
    servers = {(s.user, s.server): s for s in db.servers}
    volumes: list[Volume] = []
    warnings: list[str] = []
    without: set[str] = set()

    def kind_of(sub: str) -> str | None:
        parent = posixpath.dirname(sub) or "."
        return (listing.get(parent) or {}).get(posixpath.basename(sub))

    for sub, (user, server) in sorted(homes.items(), key=lambda kv: kv[1]):
        kind = kind_of(sub)
        if kind != "dir":
            if kind is not None:
                warnings.append(f"{user}: {sub} on PVC {layout.claim} is a {'symlink' if kind == 'link' else 'file'}"
                                ", not a directory: not backed up (jdr never follows a link out of a home)")
            without.add(user)
            continue
        sharing = [s for (u, s2), s in servers.items() if u == user and home_subpath(layout, u, s2, namespace) == sub]
        started = max((s.started for s in sharing if s.started), default=None)
        last = max((s.last_activity for s in sharing if s.last_activity), default=None)
        activity = {"started": iso(started) if started else None, "last_activity": iso(last) if last else None}
        is_running = sub in running or any(s.running for s in sharing)
        volumes.append(Volume(key=volume_key(user, server), user=user, server=server,
                              source={"pvc": record, "subPath": sub, "activity": activity},
                              running=is_running, last_activity=last))
    with_home = {v.user for v in volumes}
    for parent, entries in sorted(listing.items()):
        for name, kind in entries.items():
            sub = posixpath.normpath(posixpath.join(parent, name))
            if sub in homes or kind != "dir":
                continue
            if name in SKIPPED or name.startswith("."):
                log.info("PVC %s: %s is not a home (lost+found or a hidden directory); not backed up",
                         layout.claim, sub)
                continue
            volumes.append(Volume(key=volume_key(None, claim=f"{layout.claim}/{sub}"), user=None,
                                  source={"pvc": record, "subPath": sub, "activity": {}}, running=sub in running))
            warnings.append(f"{sub} on PVC {layout.claim} belongs to no hub user; it is backed up as an orphan")
    return Mapping(volumes=volumes, warnings=warnings,
                   users_without_volume=sorted(u for u in without if u not in with_home))


def mounted_subpaths(pods: list[Obj], claim: str) -> dict[str, list[str]]:
    """subPath -> names of the active pods, not jdr's, that mount ``claim`` with it ("" = the whole volume)."""
    found: dict[str, list[str]] = {}
    for pod in pods:
        if not pod_is_active(pod) or ((pod.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == "jdr":
            continue
        spec = pod.get("spec") or {}
        names = {v["name"] for v in spec.get("volumes") or []
                 if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim}
        for c in spec.get("containers") or []:
            for m in c.get("volumeMounts") or []:
                if m.get("name") in names:
                    found.setdefault(posixpath.normpath(m.get("subPath") or "."), []).append(
                        pod["metadata"]["name"])
    return found


@dataclass
class StaticHomes:
    """The static layout's operations for one deployment (listing, mapping, running checks, restores)."""

    dep: KubernetesDeployment
    layout: StorageLayout

    def shared_pvc(self) -> Obj:
        pvc = self.dep.kube.get_or_none(PVCS, self.layout.claim)
        if pvc is None:
            raise UsageError(f"the shared home PVC {self.layout.claim} does not exist in {self.dep.namespace}",
                             hint="check deployment.kubernetes.static_claim (z2jh singleuser.storage.static."
                                  "pvcName)")
        return pvc

    def listing(self, dirs: list[str], op: str, repo: Repository | None) -> dict[str, dict[str, str]]:
        """One listing mover on the shared volume (read-only, no fsGroup)."""
        k = self.dep.k
        args = ["list-dirs", "--run", op, "--root", DATA_MOUNT]
        for d in dirs:
            args += ["--dir", d]
        spec = MoverSpec(name=short_name("jdr-ls", op, self.layout.claim), run=op, role="backup",
                         args=tuple(args), mounts=(Mount(self.layout.claim, DATA_MOUNT, read_only=True),),
                         security=as_owner(k.volume_uid, k.volume_gid, writes=False))
        result = self.dep.movers.run(spec, repo)
        self.dep.count("movers")
        return {str(p): {str(n): str(t) for n, t in e.items()} for p, e in (result.get("dirs") or {}).items()}

    def volumes(self, db: DbInfo, op: str, repo: Repository | None) -> Mapping:
        pvc = self.shared_pvc()
        homes = homes_of(self.layout, db, self.dep.namespace)
        listing = self.listing(parents(homes), op, repo)
        running = set(mounted_subpaths(self.dep.cache.pods(), self.layout.claim))
        return map_static(self.layout, pvc, db, listing, running, self.dep.namespace)

    def pods_of(self, user: str, server: str) -> tuple[str, list[str]]:
        sub = home_subpath(self.layout, user, server, self.dep.namespace)
        return sub, mounted_subpaths(self.dep.cache.pods(), self.layout.claim).get(sub, [])

    def restore(self, req: VolumeRestore, repo: Repository) -> VolumeRestoreResult:
        """Restore one home into its subdirectory only (module doc); the directory must exist."""
        from dr.deployments.kubernetes import restore as volume_restores

        item = req.item
        if item.archive is None and item.snapshot is None:
            raise DeploymentError(f"{item.label}: the run holds neither an archive nor a snapshot of this home")
        recorded = str(item.source.get("subPath") or "")
        if req.target_user is None or (req.target_user == item.user and req.target_server == item.server):
            sub = recorded if req.target_user is None else home_subpath(self.layout, req.target_user,
                                                                        req.target_server, self.dep.namespace)
            if sub != recorded:
                log.warning("%s: recorded in %s, restored into %s (the subPath template changed)", item.label,
                            recorded, sub)
        else:
            sub = home_subpath(self.layout, req.target_user, req.target_server, self.dep.namespace)
        claim = self.layout.claim
        if self.dep.kube.get_or_none(PVCS, claim) is None:
            record = dict(item.source.get("pvc") or {})
            volume_restores._create_pvc(self.dep, {**record, "accessModes": record.get("accessModes")
                                                   or ["ReadWriteMany"]}, claim)
        parent = posixpath.dirname(sub) or "."
        kind = (self.listing([parent], _op(), repo).get(parent) or {}).get(posixpath.basename(sub))
        if kind != "dir":
            raise DeploymentError(f"{item.label}: {sub} on PVC {claim} is "
                                  + ("a symlink: jdr never restores through a link" if kind == "link" else
                                     "not a directory" if kind else "missing"),
                                  hint="start the user's server once so that its home exists, then retry")
        self.ensure_free(sub)
        volume_restores.mark_restored(self.dep, claim)
        op = _op()
        if item.archive is None:  # a snapshot-only run: copied from a PVC made from the run's one snapshot
            from dr.deployments.kubernetes.static_snapshots import restore_home_from_snapshot

            return restore_home_from_snapshot(self.dep, req, claim, sub, op, repo)
        args = ["restore-volume", "--run", op, "--root", DATA_MOUNT, "--item-json",
                json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))]
        return volume_restores._run_restore_mover(
            self.dep, req, claim, op, args, (Mount(claim, DATA_MOUNT, read_only=False, sub_path=sub),), repo,
            shared=True)

    def ensure_free(self, sub: str) -> None:
        """Return once no server pod mounts the home ``sub``; refuse (DeploymentError) if one keeps it."""
        claim = self.layout.claim

        def free(_: Any) -> bool | None:
            return True if not mounted_subpaths(self.dep.cache.pods(), claim).get(sub) else None

        if self.dep.cache.wait(free, self.dep.k.pvc_timeout) is None:
            names = ", ".join(mounted_subpaths(self.dep.cache.pods(), claim).get(sub, []))
            raise DeploymentError(f"refusing to write into {sub} on PVC {claim}: running pod(s) {names} mount it",
                                  hint="stop the user's server and retry")


def _op() -> str:
    from dr.model import new_run_id
    from dr.util.timefmt import utcnow

    return new_run_id(utcnow())
