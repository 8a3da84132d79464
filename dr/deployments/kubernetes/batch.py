"""Batched backup movers: one mover pod archives many volumes (``deployment.kubernetes.mover_batch``).

On a real cluster each pod costs seconds of scheduling, image start and volume attach; a first run over
1,000 PVCs with a mover per volume pays that 1,000 times. Here (``archive``; and the homes of a shared
volume under ``snapshot+archive``, :mod:`.static_snapshots`):

1. Every volume is first checked for activity-aware reuse (:func:`.backup.reuse_inactive`): an inactive
   user's volume is referenced without any mover, exactly as without batching.
2. The rest are grouped by where their mover must run and as whom: a volume a running pod mounts is
   pinned to that pod's node (an RWO volume is attached there); a volume mounted nowhere goes anywhere,
   grouped by the node its PersistentVolume was provisioned for (``volume.kubernetes.io/selected-node``,
   so that the volumes of one pod can be attached together); and by the Security its mover runs as.
3. Each group is cut into batches of at most ``mover_batch`` volumes, at least as many as may run at
   once (``concurrency``; ``node_concurrency`` for a group bound to one node), of even size.
4. A batch pod (``jdr agent backup-volumes``) archives its volumes one after the other, each into its own
   archive, and reports one result per volume (through the repository: 50 results exceed the 4 KiB
   termination message). A volume that fails fails only its item. A volume whose mover ran as the wrong
   user is batched again as the owner it found (then, as without batching, privileged). A batch pod that
   dies without a result (OOM, eviction, a volume it could not mount) costs nothing but time: each of its
   volumes is archived again by a mover of its own, so one bad volume fails only itself.

Homes on one shared volume (static storage, :mod:`.static`) are batched too: the volume is RWX (any node),
so their entries are not pinned; a batch pod mounts the shared PVC once, whole and read-only, and opens each
home from it safely (:mod:`.safe_home`: never through a link a user planted). The one-mover fallback mounts
a single home with its ``subPath``, as the kubelet confines it.

Restores, snapshots and ``snapshot+archive`` keep one mover (or none) per volume.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dr.deployments.base import BackupContext, Volume
from dr.deployments.kubernetes import backup as volume_backups
from dr.deployments.kubernetes.objects import DATA_MOUNT, READER, Mount, MoverSpec, Security, as_owner, short_name
from dr.errors import JdrError
from dr.model import VolumeItem

if TYPE_CHECKING:
    from dr.deployments.kubernetes.deployment import KubernetesDeployment

log = logging.getLogger(__name__)

SELECTED_NODE = "volume.kubernetes.io/selected-node"
SHARED_MODES = {"ReadWriteMany", "ReadOnlyMany"}


@dataclass(frozen=True)
class Entry:
    """One volume to archive: its claim (and, for a volume inside a shared PVC, the sub-path), where its
    mover must run (``node``: pinned; ``place``: a grouping hint only) and as whom."""

    vol: Volume
    prev: VolumeItem | None
    claim: str
    sub_path: str | None
    node: str
    place: str
    security: Security
    previous_fingerprint: str | None = None


@dataclass(frozen=True)
class Batch:
    node: str
    place: str
    security: Security
    entries: tuple[Entry, ...]


def plan(entries: Sequence[Entry], *, size: int, concurrency: int, node_concurrency: int) -> list[Batch]:
    """Cut ``entries`` into batches (module doc, step 3), in an order that alternates between groups so
    that the first batches started keep every node busy. Pure."""
    groups: dict[tuple[str, str, Security], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.node, e.place, e.security), []).append(e)
    per_group: list[list[Batch]] = []
    for (node, place, security), members in groups.items():
        slots = node_concurrency if (node or place) else concurrency
        n = len(members)
        pods = max(math.ceil(n / max(size, 1)), min(max(slots, 1), n))
        if pods > slots:  # whole waves: no last wave with a single pod while the others idle
            pods = min(n, math.ceil(pods / slots) * slots)
        cuts = [round(i * n / pods) for i in range(pods + 1)]
        per_group.append([Batch(node, place, security, tuple(members[cuts[i]:cuts[i + 1]]))
                          for i in range(pods) if cuts[i] < cuts[i + 1]])
    order: list[Batch] = []
    for i in range(max((len(g) for g in per_group), default=0)):
        order += [g[i] for g in per_group if i < len(g)]
    return order


def backup_batched(dep: KubernetesDeployment, volumes: Sequence[Volume], ctx: BackupContext,
                   previous: dict[str, VolumeItem]) -> Iterator[VolumeItem]:
    """Items of ``volumes`` (in their order), archived by batch movers (module doc)."""
    k = dep.k
    done: dict[str, VolumeItem] = {}
    with ThreadPoolExecutor(max_workers=k.concurrency, thread_name_prefix="jdr-volume") as pool:
        triaged = list(pool.map(lambda v: _triage(dep, v, ctx, previous.get(v.key)), volumes))
        todo: list[Entry] = []
        for vol, outcome in zip(volumes, triaged, strict=True):
            if isinstance(outcome, VolumeItem):
                done[vol.key] = outcome
            else:
                todo.append(outcome)
        if todo:  # (a quiet night, where every volume is referenced, lists nothing more)
            places = _selected_nodes(dep)
            todo = [replace(e, place=places.get(e.claim, "")) for e in todo]
        runner = _Runner(dep, ctx)
        for round_ in range(2):
            if not todo:
                break
            batches = plan(todo, size=k.mover_batch, concurrency=k.concurrency, node_concurrency=k.node_concurrency)
            log.info("archiving %d volumes with %d mover pods (round %d)", len(todo), len(batches), round_ + 1)
            todo = []
            for items, again in pool.map(runner.run, batches):
                done.update(items)
                todo += again
        # still the wrong user after being batched as the owner found: a mover each (may go privileged)
        for item in pool.map(lambda e: volume_backups.archive_one(dep, e.vol, ctx, e.prev, e.security), todo):
            done[item.key] = item
    for vol in volumes:
        yield done[vol.key]


def _triage(dep: KubernetesDeployment, vol: Volume, ctx: BackupContext, prev: VolumeItem | None) -> VolumeItem | Entry:
    """The reused item of an inactive volume, or the volume's :class:`Entry` (a failed item on errors)."""
    started = time.monotonic()
    try:
        reused = volume_backups.reuse_inactive(dep, vol, ctx, prev)
        if reused is not None:
            dep.count("reused_inactive")
            return replace(reused, seconds=time.monotonic() - started)
        claim = vol.source["pvc"]["name"]
        sub_path = vol.source.get("subPath")  # a home on a shared (static) volume: see .static
        return Entry(vol=vol, prev=prev, claim=claim, sub_path=str(sub_path) if sub_path else None,
                     node=_node_for(dep, vol.source["pvc"]), place="",
                     security=volume_backups.first_security(dep, vol, prev),
                     previous_fingerprint=volume_backups.previous_fingerprint(ctx, prev, vol))
    except JdrError as e:
        log.error("%s: backup failed: %s", vol.label, e)
        return replace(volume_backups.base_item(vol, ctx), status="failed", error=str(e),
                       seconds=time.monotonic() - started)


def _node_for(dep: KubernetesDeployment, pvc: dict[str, Any]) -> str:
    """The node a mover of this claim must run on: that of a running pod mounting it, unless the volume can be
    mounted on any node at once (ReadWriteMany/ReadOnlyMany: a shared home volume), then ""."""
    if set(pvc.get("accessModes") or ()) & SHARED_MODES:
        return ""
    return dep.movers.cache.node_of(str(pvc["name"]))


def _selected_nodes(dep: KubernetesDeployment) -> dict[str, str]:
    """Claim → the node its volume was provisioned for (WaitForFirstConsumer), from one PVC list."""
    return {str(p["metadata"]["name"]): str(ann[SELECTED_NODE])
            for p in dep.user_pvcs()
            if SELECTED_NODE in (ann := (p.get("metadata") or {}).get("annotations") or {})}


class _Runner:
    """Runs batches; at most ``node_concurrency`` at once on one node."""

    def __init__(self, dep: KubernetesDeployment, ctx: BackupContext) -> None:
        self.dep = dep
        self.ctx = ctx
        self._lock = threading.Lock()
        self._nodes: dict[str, threading.Semaphore] = {}

    def _slot(self, node: str) -> threading.Semaphore:
        with self._lock:
            return self._nodes.setdefault(node, threading.Semaphore(max(self.dep.k.node_concurrency, 1)))

    def run(self, batch: Batch) -> tuple[dict[str, VolumeItem], list[Entry]]:
        """Items of the batch's volumes, and the entries to batch again as another user."""
        key = batch.node or batch.place
        if not key:
            return self._run(batch)
        with self._slot(key):
            return self._run(batch)

    def _run(self, batch: Batch) -> tuple[dict[str, VolumeItem], list[Entry]]:
        dep, ctx = self.dep, self.ctx
        # Re-checked right before the pod is created: a volume whose server started elsewhere since gets a
        # mover of its own, pinned where it must be.
        entries = [e for e in batch.entries if _node_for(dep, e.vol.source["pvc"]) == batch.node]
        alone = [e for e in batch.entries if e not in entries]
        items = {e.vol.key: volume_backups.archive_one(dep, e.vol, ctx, e.prev, e.security) for e in alone}
        if len(entries) == 1:
            items[entries[0].vol.key] = volume_backups.archive_one(dep, entries[0].vol, ctx, entries[0].prev,
                                                                   entries[0].security)
            return items, []
        if not entries:
            return items, []
        started = time.monotonic()
        name = short_name("jdr-bkb", ctx.run, *(e.vol.key for e in entries), f"{len(entries)}-volumes")
        args = ["backup-volumes", "--run", ctx.run, "--batch", name, *volume_backups.task_options(ctx)]
        mounts = []
        shared: dict[str, str] = {}  # a shared (static) volume is mounted once, whole, for all its homes
        for i, e in enumerate(entries):
            if e.sub_path is None:
                path = f"{DATA_MOUNT}/v{i}"
                args += ["--volume", e.vol.key, path, e.previous_fingerprint or "-"]
                mounts.append(Mount(e.claim, path, read_only=True))
                continue
            if e.claim not in shared:
                shared[e.claim] = f"{DATA_MOUNT}/s{len(shared)}"
                mounts.append(Mount(e.claim, shared[e.claim], read_only=True))
            args += ["--home", e.vol.key, shared[e.claim], e.sub_path, e.previous_fingerprint or "-"]
        spec = MoverSpec(name=name, run=ctx.run, role="backup", args=tuple(args), mounts=tuple(mounts),
                         security=batch.security, node_name=batch.node)
        try:
            result = dep.movers.run(spec, ctx.repo, timeout=dep.k.mover_timeout * len(entries))
            dep.count("movers")
            results = result.get("volumes")
            if result.get("status") != "batch" or not isinstance(results, dict):
                raise JdrError(f"mover pod {name} answered without per-volume results")
        except JdrError as err:
            log.warning("batch mover %s (%d volumes) failed: %s; archiving each of its volumes with a mover "
                        "of its own", name, len(entries), err)
            for e in entries:
                items[e.vol.key] = volume_backups.archive_one(dep, e.vol, ctx, e.prev, e.security)
            return items, []
        again: list[Entry] = []
        for e in entries:
            outcome = _volume_outcome(e, results.get(e.vol.key), ctx, batch, started)
            if isinstance(outcome, Entry):
                again.append(outcome)
            else:
                items[e.vol.key] = outcome
        return items, again


def _volume_outcome(e: Entry, result: Any, ctx: BackupContext, batch: Batch,
                    started: float) -> VolumeItem | Entry:
    """One volume's item from its result in a batch, or its entry to batch again as the owner found."""
    base = volume_backups.base_item(e.vol, ctx)
    seconds = float(result.get("seconds", 0.0)) if isinstance(result, dict) else time.monotonic() - started
    if not isinstance(result, dict):
        return replace(base, status="failed", error="the batch mover reported no result for this volume",
                       seconds=seconds)
    status = result.get("status")
    if status == "wrong-user":
        owner = result.get("owner")
        reason = result.get("reason") or ""
        if owner and not batch.security.privileged and int(owner[0]) != batch.security.uid:
            log.info("%s: %s (read from the volume): batching it again as uid %s", e.vol.label, reason, owner[0])
            return replace(e, security=as_owner(int(owner[0]), int(owner[1]), writes=False))
        log.warning("%s: %s: archiving it as %s — the documented exception to Pod Security 'restricted' (a "
                    "volume with several owners)", e.vol.label, reason, READER.describe())
        return replace(e, security=READER)
    if status != "ok":
        error = str(result.get("error") or "the mover failed")
        log.error("%s: backup failed: %s", e.vol.label, error)
        return replace(base, status="failed", error=error, seconds=seconds)
    item = volume_backups.archived_item(e.vol, ctx, e.prev, base, result, batch.security, batch.node)
    return replace(item, seconds=seconds)
