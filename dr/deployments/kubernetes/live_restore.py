"""Self-service restores on Kubernetes (``VolumeRestore.while_running``, issue 13): new files into a user's
PVC while their server may be running.

Unlike every other restore (:mod:`.restore`), this one does not wait for the user's pod to go: it creates
new files only (``restored/<date>/…`` under the volume, or the replace-one-file rule of
:mod:`dr.deployments.self_restore`), so it may share the volume with the running server. So:

- the mover is pinned to the node of the user's running pod (a ReadWriteOnce volume in use can only be
  mounted there), re-checked right before the pod is created, as backups do;
- it runs as the user: the uid/gid of the running pod's ``securityContext`` (what the server writes as;
  its ``fsGroup`` too, so the kubelet changes nothing on the volume), else the owner the backup recorded,
  else ``kubernetes.volume_uid``/``volume_gid``; never as root and never privileged (a volume that needs
  that is an administrator's restore);
- the agent task (``jdr agent restore-volume --while-running``) is the same code as the local adapter's
  (:func:`dr.deployments.volume_swap.restore_into` with ``exact_paths``, then
  :func:`dr.deployments.self_restore.swap_in_file` for a replace): directory descriptors that never follow
  a link, nothing existing replaced or removed;
- the PVC must exist (nothing is recreated) and the run's item must hold an archive (a snapshot-only run is
  restored by an administrator).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dr.deployments.base import VolumeRestore, VolumeRestoreResult
from dr.deployments.kubernetes.api import PVCS, Obj
from dr.deployments.kubernetes.mover import MoverFailed
from dr.deployments.kubernetes.objects import (
    DATA_MOUNT,
    MANAGED_BY,
    Mount,
    MoverSpec,
    Security,
    short_name,
)
from dr.errors import DeploymentError, UsageError
from dr.model import new_run_id
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow

if TYPE_CHECKING:
    from dr.deployments.kubernetes.deployment import KubernetesDeployment

log = logging.getLogger(__name__)


def restore_while_running(dep: KubernetesDeployment, req: VolumeRestore, claim: str,
                          repo: Repository) -> VolumeRestoreResult:
    """Run ``req`` (``while_running``) into PVC ``claim`` with one mover as the user (see the module doc).

    Raises UsageError for a request that cannot be self-service (no ``into``, no archive, a missing PVC)
    and for the agent's own refusals of it (``into`` exists, a component of it is a link, a path not in
    the index), as the local adapter does; DeploymentError when the user's ids are root or the mover fails
    otherwise (its own error in the message)."""
    from dr.deployments.kubernetes.restore import mark_restored

    item = req.item
    if not req.into:
        raise UsageError("a restore while the server runs needs a new directory to restore into")
    if item.archive is None or item.index is None:
        raise UsageError(f"{item.label}: this run holds no archive of the volume, only a snapshot",
                         hint="an administrator restores snapshot-only runs (jdr restore)")
    if dep.kube.get_or_none(PVCS, claim) is None:
        raise UsageError(f"PVC {claim} does not exist: there is nothing to restore into while the server runs",
                         hint="an administrator restores a vanished volume (jdr restore)")
    op = new_run_id(utcnow())
    args = ["restore-volume", "--run", op, "--root", DATA_MOUNT, "--while-running", "--into", req.into,
            "--item-json", json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))]
    for p in req.exact_paths:
        args += ["--exact-path", p]
    for p in req.paths:
        args += ["--path", p]
    if req.replace_file:
        args.append("--replace-file")
    mark_restored(dep, claim)  # the next backup reads the volume again, even if this is killed midway
    # Re-checked right before the mover is created: a running server pins it to that pod's node.
    node = dep.cache.node_of(claim)
    security = user_security(server_pod(dep, claim), item.source, dep.k.volume_uid, dep.k.volume_gid)
    spec = MoverSpec(name=short_name("jdr-sr", op, claim), run=op, role="restore", args=tuple(args),
                     mounts=(Mount(claim, DATA_MOUNT, read_only=False),), security=security, node_name=node,
                     decrypts=True)
    log.info("%s: restoring %d path(s) into PVC %s (%s) as uid %s on %s", item.label, len(req.exact_paths),
             claim, req.into, security.uid, node or "any node (the server is not running)")
    try:
        result = dep.movers.run(spec, repo)
    except MoverFailed as e:
        if e.kind == "UsageError":  # the request's fault (``into`` exists, a link in the way): say so as such
            raise UsageError(e.message, hint=e.hint) from e
        raise
    dep.count("movers")
    if result.get("status") != "ok":
        raise MoverFailed(f"{item.label}: the self-service restore mover answered {result.get('status')!r}: "
                          f"{result.get('reason') or result.get('error') or ''}".rstrip(": "))
    target = str(result.get("target") or req.into)
    previous = result.get("previous")
    return VolumeRestoreResult(target=f"PVC {claim}: {target}", files=int(result.get("files", 0)),
                               bytes=int(result.get("bytes", 0)),
                               previous=f"PVC {claim}: {previous}" if previous else None)


def server_pod(dep: KubernetesDeployment, claim: str) -> Obj | None:
    """The running pod (not jdr's) that mounts ``claim``: the user's server, or None."""
    for pod in dep.cache.users_of(claim):
        if ((pod.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) != "jdr":
            return pod
    return None


def user_security(pod: Obj | None, source: dict[str, Any], default_uid: int, default_gid: int) -> Security:
    """Who a self-service mover runs as (module doc): the running server's ids, else the recorded owner,
    else the configured default. Raises DeploymentError when that is root (uid 0): a self-service restore
    never runs with privileges."""
    uid, gid, fs_group = _pod_ids(pod) if pod is not None else (None, None, None)
    owner = source.get("owner")
    if uid is None and isinstance(owner, list) and len(owner) == 2:
        uid, gid = int(owner[0]), int(owner[1])
    if uid is None:
        uid, gid = default_uid, default_gid
    if gid is None:
        gid = default_gid
    if uid == 0:
        raise DeploymentError("the user's server runs as root (uid 0): a self-service restore never runs a "
                              "privileged mover", hint="an administrator restores it (jdr restore --into)")
    # fsGroup only as the server has it: the kubelet then has nothing to change on the volume (a different
    # one would regroup the user's existing files when their root mismatches)
    return Security("as-user", uid=uid, gid=gid, fs_group=fs_group)


def _pod_ids(pod: Obj) -> tuple[int | None, int | None, int | None]:
    """runAsUser and runAsGroup (else fsGroup) of the server container, falling back to the pod's; and
    the pod's fsGroup."""
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    containers = spec.get("containers") or []
    # KubeSpawner names the server container "notebook"; the first container otherwise
    main = next((c for c in containers if c.get("name") == "notebook"), containers[0] if containers else {})
    sc = main.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", pod_sc.get("fsGroup")))
    fs_group = pod_sc.get("fsGroup")
    return ((int(uid) if uid is not None else None), (int(gid) if gid is not None else None),
            (int(fs_group) if fs_group is not None else None))
