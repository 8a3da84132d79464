"""Backing up one user volume on Kubernetes, by method (SPEC "Methods for user volumes").

- Activity-aware incremental: a volume whose user's server has not run since the volume was last
  captured is referenced from that capture without starting anything (no mover, no snapshot), so a
  nightly run costs in proportion to the active users. "Has not run" means: it was not running when the
  previous capture was taken (recorded in the item's ``source.running``), it is not running now, and the
  hub DB's ``started``/``last_activity`` are not later than that capture. The first condition matters:
  JupyterHub updates ``last_activity`` only periodically, so a server that ran during the last capture
  may have written files after it without any later timestamp. The PVC must also be the same object
  (its uid), jdr must not have restored into it since (the ``jdr.hub.jupyter.org/restored-at``
  annotation), and the previous artifacts (or snapshot) must still be good: dr/deployments/reuse.py
  (not recorded damaged, not older than ``backup.full_every``, present at their size). ``--full`` turns
  this off.
  PVCs that map to no user have no activity record, so they always get a mover.
- ``archive``: a mover mounts the PVC read-only (pinned to the node of the user's running pod, found
  right before the mover is created) and streams a tar.zst into the repository; an unchanged listing
  fingerprint uploads nothing and references the previous archive.
- ``snapshot``: a VolumeSnapshot, awaited by watch, recorded in the item.
- ``snapshot+archive``: a snapshot, a temporary PVC from it, a mover archiving that PVC; then the
  temporary PVC *and* the snapshot are deleted (the archive is the backup; keeping snapshots is what the
  ``snapshot`` method is for).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dr.deployments.base import BackupContext, Volume
from dr.deployments.kubernetes.api import PVCS, SNAPSHOTS
from dr.deployments.kubernetes.objects import (
    DATA_MOUNT,
    READER,
    RESTORED_ANNOTATION,
    Mount,
    MoverSpec,
    Security,
    jdr_labels,
    make_pvc,
    owner_record,
    parse_quantity,
    short_name,
    volume_security,
)
from dr.deployments.kubernetes.snapshots import delete_quietly, snapshot_ready, take_snapshot
from dr.deployments.reuse import decide_reuse
from dr.errors import JdrError
from dr.model import Artifact, VolumeItem, run_time
from dr.util.timefmt import parse_iso

if TYPE_CHECKING:
    from dr.deployments.kubernetes.deployment import KubernetesDeployment

log = logging.getLogger(__name__)


def archive_one(dep: KubernetesDeployment, vol: Volume, ctx: BackupContext, prev: VolumeItem | None,
                security: Security | None = None) -> VolumeItem:
    """One volume archived by its own mover (no reuse check; a batch's fallback); failures are failed items."""
    started = time.monotonic()
    base = base_item(vol, ctx)
    sub = str(vol.source.get("subPath") or "")  # a home on a shared (static) volume: mount only its directory
    try:
        item = _archive(dep, vol, ctx, prev, base, claim=vol.source["pvc"]["name"], pin=not sub, security=security,
                        sub_path=sub)
        return replace(item, seconds=time.monotonic() - started)
    except JdrError as e:
        log.error("%s: backup failed: %s", vol.label, e)
        return replace(base, status="failed", error=str(e), seconds=time.monotonic() - started)


def backup_one(dep: KubernetesDeployment, vol: Volume, ctx: BackupContext, prev: VolumeItem | None) -> VolumeItem:
    """One volume's item; failures are failed items (never raised), so one user never fails the run."""
    started = time.monotonic()
    pvc = vol.source["pvc"]
    sub = str(vol.source.get("subPath") or "")  # a home on a shared (static) volume: see .static
    base = base_item(vol, ctx)
    try:
        reused = reuse_inactive(dep, vol, ctx, prev)
        if reused is not None:
            dep.count("reused_inactive")
            return replace(reused, seconds=time.monotonic() - started)
        if ctx.method == "snapshot":
            snap = take_snapshot(dep.kube, name=short_name("jdr-snap", ctx.run, vol.key), pvc=pvc["name"],
                                 snapshot_class=dep.k.snapshot_class, labels=jdr_labels(ctx.run, "snapshot"),
                                 annotations=dict(dep.k.snapshot_annotations), timeout=dep.k.snapshot_timeout)
            dep.count("snapshots")
            return replace(base, snapshot=snap, seconds=time.monotonic() - started)
        if ctx.method == "snapshot+archive":
            item = _snapshot_then_archive(dep, vol, ctx, prev, base)
        else:
            item = _archive(dep, vol, ctx, prev, base, claim=pvc["name"], pin=not sub, sub_path=sub)
        return replace(item, seconds=time.monotonic() - started)
    except JdrError as e:
        log.error("%s: backup failed: %s", vol.label, e)
        return replace(base, status="failed", error=str(e), seconds=time.monotonic() - started)


def base_item(vol: Volume, ctx: BackupContext) -> VolumeItem:
    """A volume's item before anything is known (its source as discovered)."""
    return VolumeItem(key=vol.key, user=vol.user, server=vol.server, method=ctx.method,
                      source={"pvc": vol.source["pvc"], "running": vol.running, "verified_in": ctx.run,
                              **{k: vol.source[k] for k in ("subPath", "extra_volume") if k in vol.source}})


def reuse_inactive(dep: KubernetesDeployment, vol: Volume, ctx: BackupContext,
                   prev: VolumeItem | None) -> VolumeItem | None:
    """The previous item, referenced as is, when the volume cannot have changed since (module doc)."""
    if ctx.full or prev is None or ctx.previous is None or prev.status != "ok" or prev.method != ctx.method:
        return None
    if vol.user is None or vol.running or prev.source.get("running", True):
        return None
    if not prev.source.get("pvc", {}).get("uid") or prev.source["pvc"]["uid"] != vol.source["pvc"].get("uid"):
        return None
    if prev.source.get("subPath", "") != vol.source.get("subPath", ""):
        return None  # another directory of the shared volume
    # The run in which the volume was last read (an archive written, or a listing found unchanged, or a
    # snapshot taken): activity after it is what matters, not the age of the archive referenced.
    captured_run = prev.source.get("verified_in") or prev.reused_from or ctx.previous.run
    captured_at = run_time(captured_run)
    activity = vol.source.get("activity") or {}
    for field in ("started", "last_activity"):
        if _after(activity.get(field), captured_at):
            return None
    if _after((vol.source["pvc"].get("annotations") or {}).get(RESTORED_ANNOTATION), captured_at):
        return None  # jdr restored into it since
    if ctx.method == "snapshot":
        if prev.snapshot is None or not snapshot_ready(dep.kube, prev.snapshot):
            return None
        taken = prev.reused_from or ctx.previous.run
        if ctx.reuse_since is not None and run_time(taken) < ctx.reuse_since:
            return None  # older than backup.full_every: take a new one
    elif not decide_reuse(ctx, prev, vol.label).reusable:
        return None
    log.info("%s: inactive since run %s, referencing its capture without a mover", vol.label, captured_run)
    owners: dict[str, Any] = {k: prev.source[k] for k in ("owner", "owners") if k in prev.source}
    owners.update({k: vol.source[k] for k in ("subPath", "extra_volume") if k in vol.source})
    return replace(prev, source={"pvc": vol.source["pvc"], "running": False, "verified_in": captured_run, **owners},
                   reused_from=prev.reused_from or ctx.previous.run, warnings=())


def _after(text: str | None, when: datetime) -> bool:
    return bool(text) and parse_iso(str(text)) >= when


def _archive(dep: KubernetesDeployment, vol: Volume, ctx: BackupContext, prev: VolumeItem | None,
             base: VolumeItem, *, claim: str, pin: bool, security: Security | None = None,
             sub_path: str = "") -> VolumeItem:
    movers = dep.movers
    # Re-checked right before the mover is created: a running user pod pins it to that pod's node.
    node = movers.cache.node_of(claim) if pin else ""
    security = security or first_security(dep, vol, prev)
    args = ["backup-volume", "--run", ctx.run, "--key", vol.key, "--root", DATA_MOUNT, *task_options(ctx)]
    previous_fp = previous_fingerprint(ctx, prev, vol)
    if previous_fp:
        args += ["--previous-fingerprint", previous_fp]
    spec = MoverSpec(name=short_name("jdr-bk", ctx.run, vol.key), run=ctx.run, role="backup", args=tuple(args),
                     mounts=(Mount(claim, DATA_MOUNT, read_only=True, sub_path=sub_path),), security=security,
                     node_name=node)
    result, used = movers.run_as_owner(spec, ctx.repo, privileged=READER, label=vol.label)
    dep.count("movers")
    return archived_item(vol, ctx, prev, base, result, used, node)


def task_options(ctx: BackupContext) -> list[str]:
    """The agent options every backup mover of the run shares."""
    args = ["--level", str(ctx.level), "--threads", str(ctx.threads)]
    for pattern in ctx.excludes:
        args += ["--exclude", pattern]
    return args


def previous_fingerprint(ctx: BackupContext, prev: VolumeItem | None, vol: Volume) -> str | None:
    """The previous listing fingerprint, when its archive may be referenced (an unchanged volume uploads
    nothing)."""
    if prev is not None and prev.fingerprint and decide_reuse(ctx, prev, vol.label).reusable:
        return prev.fingerprint
    return None


def first_security(dep: KubernetesDeployment, vol: Volume, prev: VolumeItem | None) -> Security:
    """Who the volume's mover runs as first (the owner the last backup recorded, else the default)."""
    security = volume_security(prev.source if prev else None, dep.k.volume_uid, dep.k.volume_gid, writes=False)
    if security.privileged:
        log.warning("%s: the last backup found several owners on this volume: running the mover as %s (the "
                    "documented exception to Pod Security 'restricted')", vol.label, security.describe())
    return security


def archived_item(vol: Volume, ctx: BackupContext, prev: VolumeItem | None, base: VolumeItem,
                  result: dict[str, Any], used: Security, node: str) -> VolumeItem:
    """The item of a volume from its mover's result (``status: ok``), run as ``used``."""
    source = {**base.source, **owner_record(result, used)}
    if node:
        source["node"] = node
    if result.get("unchanged") and prev is not None and ctx.previous is not None:
        log.info("%s: unchanged since run %s, referencing its archive", vol.label,
                 prev.reused_from or ctx.previous.run)
        return replace(prev, source=source, method=base.method,
                       reused_from=prev.reused_from or ctx.previous.run, warnings=())
    return replace(base, source=source, archive=_art(result.get("archive")), index=_art(result.get("index")),
                   fingerprint=str(result.get("fingerprint", "")), files=int(result.get("files", 0)),
                   bytes=int(result.get("bytes", 0)), warnings=tuple(result.get("warnings") or ()))


def _snapshot_then_archive(dep: KubernetesDeployment, vol: Volume, ctx: BackupContext, prev: VolumeItem | None,
                           base: VolumeItem) -> VolumeItem:
    pvc = vol.source["pvc"]
    snap = take_snapshot(dep.kube, name=short_name("jdr-snap", ctx.run, vol.key), pvc=pvc["name"],
                         snapshot_class=dep.k.snapshot_class, labels=jdr_labels(ctx.run, "snapshot"),
                         annotations=dict(dep.k.snapshot_annotations), timeout=dep.k.snapshot_timeout)
    dep.count("snapshots")
    temp = short_name("jdr-tmp", ctx.run, vol.key)
    try:
        size = pvc.get("size") or "1Gi"
        if snap.restore_size and parse_quantity(snap.restore_size) > parse_quantity(size):
            size = snap.restore_size
        record: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "size": size,
                                  "storageClassName": pvc.get("storageClassName", ""),
                                  "volumeMode": pvc.get("volumeMode", "Filesystem")}
        dep.kube.create(PVCS, make_pvc(record, name=temp, snapshot=snap.name, storage_class=dep.k.storage_class,
                                       labels=jdr_labels(ctx.run, "temp")))
        item = _archive(dep, vol, ctx, prev, base, claim=temp, pin=False)
        return replace(item, source={**item.source, "snapshot": snap.name})
    finally:
        delete_quietly(dep.kube, PVCS, temp)
        delete_quietly(dep.kube, SNAPSHOTS, snap.name)


def _art(d: Any) -> Artifact | None:
    return Artifact.from_dict(d) if isinstance(d, dict) else None
