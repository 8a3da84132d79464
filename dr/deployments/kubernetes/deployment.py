"""The ``kubernetes`` deployment: a z2jh release in one namespace (see dr.deployments.base for the port).

Discovery is in :mod:`.discovery`, the hub in :mod:`.hub`, volume backups in :mod:`.backup`, volume
restores in :mod:`.restore`, mover pods in :mod:`.mover`; every cluster call goes through :mod:`.api`.
Objects jdr creates are labelled with the run (or restore operation) and removed when it ends; leftovers
of runs that died are removed by the next backup, which holds the repository's exclusive lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dr.deployments.base import BackupContext, CapturedHub, Volume, VolumeRestore, VolumeRestoreResult
from dr.deployments.kubernetes import backup as volume_backups
from dr.deployments.kubernetes import batch as volume_batches
from dr.deployments.kubernetes import restore as volume_restores
from dr.deployments.kubernetes.api import PODS, PVCS, SNAPSHOTS, Kube, KubeError
from dr.deployments.kubernetes.discovery import Hub, find_hub, list_user_pvcs, map_volumes, read_secret
from dr.deployments.kubernetes.hub import HubOps
from dr.deployments.kubernetes.mover import Movers, PodCache, mover_config
from dr.deployments.kubernetes.objects import (
    ROLE_LABEL,
    RUN_LABEL,
    mover_env,
    pod_claims,
    pod_is_active,
    pvc_record,
    run_selector,
    secret_record,
)
from dr.deployments.kubernetes.snapshots import delete_quietly
from dr.deployments.kubernetes.static import StaticHomes
from dr.deployments.kubernetes.storage_layout import StorageLayout, discover_layout
from dr.errors import ConfigError, DeploymentError, UsageError
from dr.hubdb.capture import inspect_database
from dr.hubdb.dumps import check_dump
from dr.hubdb.info import DbInfo
from dr.model import Artifact, Manifest, Snapshot, VolumeItem, new_run_id, volume_key
from dr.repository.repository import Repository
from dr.settings import Settings
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)


class KubernetesDeployment:
    """A :class:`dr.deployments.base.Deployment` for a z2jh release."""

    kind = "kubernetes"

    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.k = settings.deployment.kubernetes
        if self.k.concurrency < 1:
            raise ConfigError("deployment.kubernetes.concurrency: must be at least 1")
        if self.k.mover_batch < 1 or self.k.node_concurrency < 1:
            raise ConfigError("deployment.kubernetes.mover_batch and node_concurrency: must be at least 1")
        mover_env(settings)  # a repository movers cannot reach (file://) is refused before anything starts
        # A connection per mover thread, the pod watch and snapshot/PVC watches, plus some slack.
        self.kube = kube or Kube.connect(self.k.kubeconfig, self.k.namespace, pool_size=2 * self.k.concurrency + 8)
        self.namespace = self.kube.namespace
        self._lock = threading.Lock()
        self._cache: PodCache | None = None
        self._movers: Movers | None = None
        self._hub: Hub | None = None
        self._layout: StorageLayout | None = None
        self._hub_ops: HubOps | None = None
        self._hub_stopped = False
        self._replace_hub_db = False  # decided by prepare_hub_restore (--replace-hub-db), for a server hub DB
        self._users_without_volume: list[str] = []
        self.repo: Repository | None = None  # bound by capture_hub_database (and usable by hub_database)
        self.stats: dict[str, int] = {"movers": 0, "reused_inactive": 0, "snapshots": 0}  # see count()
        self._pvcs: tuple[float, list[dict[str, Any]]] | None = None  # (when, user PVCs) for restores

    # --- shared machinery ----------------------------------------------------------------------------

    @property
    def cache(self) -> PodCache:
        with self._lock:
            if self._cache is None:
                self._cache = PodCache(self.kube, self.namespace).start()
            return self._cache

    @property
    def movers(self) -> Movers:
        cache = self.cache
        with self._lock:
            if self._movers is None:
                cfg = mover_config(self.settings, self._mover_image(),
                                   service_account=self.k.mover_service_account)
                self._movers = Movers(self.kube, cache, cfg)
            return self._movers

    @property
    def hub_ops(self) -> HubOps:
        movers = self.movers
        if self._hub_ops is None:
            self._hub_ops = HubOps(self.kube, self.cache, movers, self.k.hub_ready_timeout, self.k.hub_selector)
        return self._hub_ops

    def hub(self, refresh: bool = False) -> Hub:
        if self._hub is None or refresh:
            self._hub = find_hub(self.kube, self.k, self.settings.deployment.hub_db_url)
        return self._hub

    def layout(self, refresh: bool = False) -> StorageLayout:
        """How homes are stored (dynamic or static) and the extra volumes to back up; raises UsageError
        (exit 2) for a layout jdr cannot back up, before anything is written."""
        if self._layout is None or refresh:
            self._layout = discover_layout(self.kube, self.k, self.hub().secret)
        return self._layout

    def static_homes(self) -> StaticHomes:
        layout = self.layout()
        if layout.kind != "static":
            raise UsageError("this run holds homes on a shared (static) volume, but the release stores homes "
                             f"as {layout.kind}", hint="set deployment.kubernetes.home_storage: static")
        return StaticHomes(self, layout)

    def _mover_image(self) -> str:
        if self.k.mover_image:
            return self.k.mover_image
        pod_name = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "")
        pod = self.kube.get_or_none(PODS, pod_name) if pod_name else None
        images = [c.get("image", "") for c in ((pod or {}).get("spec") or {}).get("containers") or []]
        if not images or not images[0]:
            raise ConfigError("deployment.kubernetes.mover_image: required when jdr does not run in a pod "
                              "of the namespace (it defaults to that pod's own image)",
                              hint="set it to jdr's image, e.g. ghcr.io/…/jdr:<version>")
        return str(images[0])

    def close(self) -> None:
        if self._cache is not None:
            self._cache.stop()

    def count(self, what: str) -> None:
        """Count one event of this run (movers started, volumes reused without one, snapshots taken)."""
        with self._lock:
            self.stats[what] = self.stats.get(what, 0) + 1

    @property
    def restore_concurrency(self) -> int:
        """How many volumes a full restore puts back at once (read by dr.operations.restore)."""
        return self.k.concurrency

    @property
    def api_calls(self) -> int:
        return self.kube.total_calls

    def describe(self) -> dict[str, Any]:
        hub = self.hub()
        return {"kind": self.kind, "namespace": self.namespace,
                "hub": {"deployment": hub.deployment, "db_claim": hub.db_claim, "db_path": hub.db_path,
                        "secret": hub.secret, "image": hub.image, "uid": hub.uid, "gid": hub.gid,
                        "db_pvc": hub.db_pvc,
                        **({"db": hub.server_db.describe()} if hub.server_db else {})},
                "storage": self.layout().describe(),
                "users_without_volume": list(self._users_without_volume)}

    # --- the hub ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def capture_hub_database(self, repo: Repository, run: str, *, level: int = 3,
                             keep: bool = True) -> Iterator[CapturedHub]:
        """The hub DB captured by a mover straight into ``repo`` as ``run``'s artifact, plus a local copy.

        ``keep=False`` (a dry run): the artifact is deleted again once read. A real run (``keep``) first
        removes what runs that died left in the namespace.
        """
        self.repo = repo
        self.layout(refresh=True)  # a layout jdr cannot back up is refused before anything is written
        if keep:
            self.sweep_leftovers(repo, run)
        hub = self.hub(refresh=True)
        server_info: DbInfo | None = None
        if hub.server_db is not None:
            artifact, server_info = self.hub_ops.capture_server(hub, repo, run, level)
        else:
            artifact = Artifact.from_dict(self.hub_ops.capture(hub, repo, run, level)["artifact"])
        self.count("movers")
        try:
            with tempfile.TemporaryDirectory(prefix="jdr-hubdb-") as tmp:
                db_file = Path(tmp) / ("jupyterhub.sqlite" if server_info is None else "jupyterhub.dump")
                info = _download_db(repo, artifact, db_file, server_info)
                yield CapturedHub(db_file=db_file, info=info, artifact=artifact if keep else None)
        finally:
            if not keep:
                with contextlib.suppress(Exception):
                    repo.store.delete(artifact.key)

    @contextlib.contextmanager
    def hub_database(self) -> Iterator[tuple[Path, DbInfo]]:
        if self.repo is None:
            raise DeploymentError("on Kubernetes the hub database is read through the repository: "
                                  "use capture_hub_database(repo, run)")
        with self.capture_hub_database(self.repo, new_run_id(utcnow()), keep=False) as cap:
            yield cap.db_file, cap.info

    def hub_secret(self) -> bytes | None:
        hub = self.hub()
        secret = read_secret(self.kube, hub.secret)
        if secret is None:
            log.warning("the hub Secret %s does not exist in %s; it is not backed up", hub.secret, self.namespace)
            return None
        return json.dumps(secret_record(secret), sort_keys=True).encode()

    def hub_running(self) -> bool:
        return self.hub_ops.running(self.hub())

    def stop_hub(self) -> None:
        self.hub_ops.stop(self.hub(refresh=True))
        self._hub_stopped = True

    def start_hub(self) -> None:
        self.hub_ops.start(self.hub())
        self._hub_stopped = False

    def restore_hub_database(self, db_file: Path, info: DbInfo) -> str:
        raise DeploymentError("on Kubernetes the hub database is restored from its artifact by a mover",
                              hint="use restore_hub_database_from(repo, manifest)")

    def prepare_hub_restore(self, info: DbInfo, *, replace: bool = False) -> None:
        """Refuse, before the hub is stopped, a run whose hub database this hub cannot take (an SQLite file
        for a hub on PostgreSQL, a dump of another database kind …), and, without ``replace``, a server
        database that holds tables (a check mover: the hub keeps running; the restore mover checks again)."""
        db = self.hub(refresh=True).server_db
        mine = db.dump_format if db is not None else "sqlite"
        if info.dump_format != mine:
            raise UsageError(f"the run's hub database is {info.kind} ({info.dump_format}); this hub's is "
                             f"{db.url.kind if db else 'an SQLite file on a PVC'}",
                             hint="restore into a hub of the same kind (hub.db.type), or set deployment.hub_db_url")
        if db is not None and not replace and not self.hub_ops.check_server_empty(self.hub(), new_run_id(utcnow())):
            raise UsageError(f"the hub database {db.url_text()} is not empty; nothing was restored (the hub keeps "
                             "running)", hint="restore into an empty database, or pass --replace-hub-db to set "
                                              "its current tables aside")
        self._replace_hub_db = replace

    def restore_hub_database_from(self, repo: Repository, manifest: Manifest) -> str:
        """Write the run's hub DB into the hub's volume (the hub stopped); returns where the old one is."""
        if manifest.hub is None or manifest.hub.db is None:
            raise UsageError(f"run {manifest.run} holds no hub database")
        op = new_run_id(utcnow())
        recorded = manifest.deployment.get("hub") or {}
        old_ns = str(manifest.deployment.get("namespace") or "")
        if old_ns and old_ns != self.namespace:
            # KubeSpawner >= 7 keeps each server's namespace in its state and never resets it
            # (kubespawner/spawner.py get_state/clear_state), so servers that ever ran would be spawned there.
            log.warning("the hub database comes from namespace %s and is restored into %s: KubeSpawner will "
                        "start the servers of users who ever had one in %s; restore into a namespace of the "
                        "same name for a working hub", old_ns, self.namespace, old_ns)
        hub = self.hub()
        if hub.server_db is not None:
            result = self.hub_ops.restore_server(hub, repo, manifest.hub.db, op, users=manifest.hub.users,
                                                 replace=self._replace_hub_db)
            return str(result.get("previous") or "")
        result = self.hub_ops.restore_db(hub, repo, manifest.hub.db, op, recorded)
        return str(result.get("previous") or "")

    def restore_hub_secret(self, data: bytes) -> None:
        self.hub_ops.restore_secret(self.hub(), data, new_run_id(utcnow()))

    # --- volumes -------------------------------------------------------------------------------

    def volumes(self, db: DbInfo) -> list[Volume]:
        running = {claim for p in self.cache.pods() if pod_is_active(p) and not _is_jdr(p)
                   for claim in pod_claims(p)}
        layout = self.layout()
        if layout.kind == "static":
            mapping = self.static_homes().volumes(db, new_run_id(utcnow()), self.repo)
        else:
            mapping = map_volumes(list_user_pvcs(self.kube, self.k), db, running)
        mapping.volumes.extend(extra_volumes(self.kube, layout, mapping.volumes, running))
        for w in mapping.warnings:
            log.warning("%s", w)
        if mapping.users_without_volume:
            log.warning("%d users have no volume (no PVC found): %s", len(mapping.users_without_volume),
                        ", ".join(mapping.users_without_volume[:20]))
        self._users_without_volume = mapping.users_without_volume
        return mapping.volumes

    def user_pvcs(self, max_age: float = 10.0) -> list[dict[str, Any]]:
        """The user PVCs, listed at most ``max_age`` seconds ago: a full restore looks up every user's PVC,
        and one list serves them all (a stale answer only means falling back to the recorded name)."""
        with self._lock:
            if self._pvcs is not None and time.monotonic() - self._pvcs[0] < max_age:
                return self._pvcs[1]
        pvcs = list_user_pvcs(self.kube, self.k)
        with self._lock:
            self._pvcs = (time.monotonic(), pvcs)
        return pvcs

    def server_running(self, user: str, server: str = "") -> bool:
        """Whether a pod (not jdr's) mounts the user's PVC: learned from the pod list, not from the hub."""
        return bool(self._server_pods(user, server)[1])

    def running_evidence(self, user: str, server: str = "") -> str:
        """Where :meth:`server_running` learned that the server runs (for messages)."""
        pvc, pods = self._server_pods(user, server)
        who = f"{user}'s server" + (f" {server!r}" if server else "")
        return (f"the pod list of namespace {self.namespace} shows {who} running (pod {', '.join(pods)} mounts "
                f"PVC {pvc}; the hub was not asked)")

    def _server_pods(self, user: str, server: str) -> tuple[str, list[str]]:
        if self.layout().kind == "static":
            sub, pods = self.static_homes().pods_of(user, server)
            return f"{self.layout().claim} (subPath {sub})", pods
        pvc = volume_restores.find_target_pvc(self, user, server, None)
        if not pvc:
            return "", []
        return pvc, [p["metadata"]["name"] for p in self.cache.users_of(pvc) if not _is_jdr(p)]

    def backup_volumes(self, volumes: Sequence[Volume], ctx: BackupContext) -> Iterator[VolumeItem]:
        if ctx.method not in ("archive", "snapshot", "snapshot+archive"):
            raise UsageError(f"--method {ctx.method!r} is not supported on Kubernetes")
        if ctx.method != "snapshot":
            _ = self.movers  # configuration errors (image, key file) before any item
        previous = {v.key: v for v in ctx.previous.volumes} if ctx.previous else {}
        homes = [v for v in volumes if v.source.get("subPath")]
        if ctx.method != "archive" and homes:  # one snapshot of the shared volume per run, not per home
            from dr.deployments.kubernetes.static_snapshots import backup_shared

            yield from backup_shared(self, homes, ctx, previous)
            volumes = [v for v in volumes if not v.source.get("subPath")]
        if ctx.method == "archive" and self.k.mover_batch > 1:
            yield from volume_batches.backup_batched(self, volumes, ctx, previous)
            return
        with ThreadPoolExecutor(max_workers=self.k.concurrency, thread_name_prefix="jdr-volume") as pool:
            yield from pool.map(lambda v: volume_backups.backup_one(self, v, ctx, previous.get(v.key)), volumes)

    def restore_volume(self, req: VolumeRestore, repo: Repository) -> VolumeRestoreResult:
        return volume_restores.restore_volume(self, req, repo)

    def delete_snapshots(self, snapshots: list[Snapshot]) -> int:
        """Delete VolumeSnapshots no kept run references (called by ``jdr prune``); returns how many."""
        n = 0
        unique = {(s.namespace, s.name): s for s in snapshots}  # a static layout's homes share one snapshot
        for s in unique.values():
            try:
                if self.kube.delete(SNAPSHOTS, s.name, s.namespace or None):
                    n += 1
            except KubeError as e:
                log.warning("could not delete VolumeSnapshot %s/%s: %s", s.namespace, s.name, e)
        return n

    # --- clean-up ----------------------------------------------------------------------------------

    def sweep_leftovers(self, repo: Repository, run: str) -> list[str]:
        """Delete what runs that died left behind: mover pods, temporary PVCs, and snapshots of runs
        without a manifest. Call only under the repository's exclusive lock (no other run is alive)."""
        removed: list[str] = []
        committed = set(repo.run_ids())
        for res, roles in ((PODS, None), (PVCS, {"temp"}), (SNAPSHOTS, None)):
            items, _ = self.kube.list(res, label_selector=run_selector())
            for obj in items:
                labels = obj["metadata"].get("labels") or {}
                other = labels.get(RUN_LABEL, "")
                if other == run or (roles is not None and labels.get(ROLE_LABEL) not in roles):
                    continue
                if res is SNAPSHOTS and other in committed:
                    continue  # a snapshot a committed run references (the ``snapshot`` method)
                if res is PODS and labels.get(ROLE_LABEL) != "mover":
                    continue
                delete_quietly(self.kube, res, obj["metadata"]["name"])
                removed.append(f"{res.kind}/{obj['metadata']['name']}")
        if removed:
            log.warning("removed %d objects left by runs that died: %s", len(removed), ", ".join(removed[:10]))
        return removed


def extra_volumes(kube: Kube, layout: StorageLayout, volumes: list[Volume], running: set[str]) -> list[Volume]:
    """The ``extra_volumes`` PVCs as items of no user (keyed by claim), unless already an item."""
    have = {str((v.source.get("pvc") or {}).get("name")) for v in volumes if not v.source.get("subPath")}
    found: list[Volume] = []
    for name, claim in sorted(layout.extra.items()):
        if claim in have:
            continue
        pvc = kube.get_or_none(PVCS, claim)
        if pvc is None:
            raise UsageError(f"deployment.kubernetes.extra_volumes: {name!r} names PVC {claim}, which does not "
                             f"exist in {kube.namespace}")
        found.append(Volume(key=volume_key(None, claim=claim), user=None,
                            source={"pvc": pvc_record(pvc), "activity": {}, "extra_volume": name},
                            running=claim in running))
        have.add(claim)
    return found


def _download_db(repo: Repository, artifact: Artifact, dest: Path, server_info: DbInfo | None = None) -> DbInfo:
    """Download the hub DB artifact to ``dest``; an SQLite file is inspected, a server dump checked and
    described by what its mover reported (``server_info``)."""
    repo.download_decompressed(artifact, dest)
    if server_info is not None:
        check_dump(dest, server_info.dump_format)
        return server_info
    return inspect_database(dest)


def _is_jdr(pod: dict[str, Any]) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == "jdr"

