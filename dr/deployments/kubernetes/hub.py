"""The hub on Kubernetes: capturing its live database, stopping and starting it, putting back its DB
and its ``hub`` Secret.

Why the hub DB is captured by a mover pod (and not through the hub pod): the hub image has no jdr in it,
and ``kubectl exec`` would need the ``pods/exec`` right, a shell in the hub image and a byte-exact stream
through the API server. Instead a mover of jdr's own image, pinned to the hub pod's node (``hub-db-dir``
is ReadWriteOnce), mounts the volume next to the running hub, as the hub's own uid/gid, and takes the copy
with SQLite's online backup API (``jdr agent capture-hub-db``): the hub keeps running and is never
locked out for longer than one local copy. The mover writes the compressed copy straight into the
repository as the run's artifact; the jdr process then downloads it (the DB is small) to read the users
and their servers from it, and the run references that artifact instead of uploading it again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from dr.deployments.kubernetes.api import DEPLOYMENTS, PVCS, SECRETS, Kube, KubeConflict, KubeNotFound
from dr.deployments.kubernetes.discovery import Hub
from dr.deployments.kubernetes.hubdb_agent import info_from_doc
from dr.deployments.kubernetes.hubdb_server import ServerDb, capture_spec, check_spec, restore_spec
from dr.deployments.kubernetes.mover import MoverFailed, Movers, PodCache
from dr.deployments.kubernetes.objects import (
    Mount,
    MoverSpec,
    Security,
    jdr_labels,
    make_pvc,
    make_secret_copy,
    secret_record,
    short_name,
)
from dr.errors import DeploymentError, IntegrityError, UsageError
from dr.hubdb.info import DbInfo
from dr.model import Artifact
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)


def hub_security(hub: Hub) -> Security:
    return Security("as-user", uid=hub.uid, gid=hub.gid, fs_group=hub.fs_group)


def _matches(pod: dict[str, Any], selector: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    want = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


class HubOps:
    def __init__(self, kube: Kube, cache: PodCache, movers: Movers, ready_timeout: int, selector: str = "") -> None:
        self.selector = selector
        self.kube = kube
        self.cache = cache
        self.movers = movers
        self.ready_timeout = ready_timeout
        self._replicas: dict[str, int] = {}  # replicas each Deployment had when we stopped it

    def pods(self, hub: Hub) -> list[dict[str, Any]]:
        return [p for p in self.cache.pods() if hub.pod_selector and _matches(p, hub.pod_selector)]

    def running(self, hub: Hub) -> bool:
        return any((p.get("status") or {}).get("phase") == "Running" for p in self.pods(hub))

    # --- capture -------------------------------------------------------------------------------

    def capture(self, hub: Hub, repo: Repository, run: str, level: int) -> dict[str, Any]:
        """Run the capture mover; returns its result (``artifact``, ``revision``, ``integrity`` …)."""
        if not hub.deployment and not hub.db_claim:
            raise DeploymentError(f"no hub Deployment in namespace {self.kube.namespace} (selector "
                                  f"{self.selector!r})", hint="check deployment.kubernetes.namespace, release and "
                                                              "hub_selector")
        if self.kube.get_or_none(PVCS, hub.db_claim) is None:
            raise DeploymentError(f"the hub database volume (PVC {hub.db_claim}) does not exist in "
                                  f"{self.kube.namespace}", hint="check deployment.kubernetes.namespace")
        spec = MoverSpec(name=short_name("jdr-hubdb", run, "capture"), run=run, role="hub-capture",
                         args=("capture-hub-db", "--run", run, "--path", hub.db_path, "--level", str(level)),
                         mounts=(Mount(hub.db_claim, hub.db_dir, read_only=False),), security=hub_security(hub),
                         node_name=self.cache.node_of(hub.db_claim))
        return self.movers.run(spec, repo)

    def capture_server(self, hub: Hub, repo: Repository, run: str, level: int) -> tuple[Artifact, DbInfo]:
        """Dump a PostgreSQL/MySQL hub database from a mover pod into ``repo`` (:mod:`.hubdb_server`)."""
        assert hub.server_db is not None
        result = self._run_server(capture_spec(hub.server_db, run, level, hub_security(hub)), repo, hub.server_db)
        return Artifact.from_dict(result["artifact"]), info_from_doc(result["info"])

    def check_server_empty(self, hub: Hub, op: str) -> bool:
        """Whether the hub's database server is reachable (else UsageError) and its database empty."""
        assert hub.server_db is not None
        return bool(self._run_server(check_spec(hub.server_db, op, hub_security(hub)), None, hub.server_db)["empty"])

    def restore_server(self, hub: Hub, repo: Repository, artifact: Artifact, op: str, *, users: tuple[str, ...],
                       replace: bool = False, scratch: str = "") -> dict[str, Any]:
        """Load a run's dump into the hub's database server from a mover pod (``scratch``: into a new database,
        dropped after); then the checks of an SQLite restore: healthy, and the users the run recorded.
        Returns the mover's result with ``info`` as a DbInfo."""
        assert hub.server_db is not None
        spec = restore_spec(hub.server_db, op, artifact, hub_security(hub), replace=replace, scratch=scratch)
        result = self._run_server(spec, repo, hub.server_db)
        info = info_from_doc(result["info"])
        if info.integrity != "ok":
            raise IntegrityError(f"the restored hub database failed its check: {info.integrity}")
        if sorted(info.users) != sorted(users):
            raise IntegrityError(f"the restored hub database has {len(info.users)} users; the run recorded "
                                 f"{len(users)}", hint="the dump does not match the run's manifest: restore "
                                                       "another run")
        return {**result, "info": info}

    def _run_server(self, spec: Any, repo: Repository | None, db: ServerDb) -> dict[str, Any]:
        try:
            return self.movers.run(spec, repo)
        except MoverFailed as e:  # the database's own refusals keep their exit code 2 (a setting to fix)
            if e.kind in ("UsageError", "ConfigError", "UnreachableDatabase", "LoginRefused"):
                raise UsageError(e.message, hint=e.hint or f"the hub database is {db.url.redacted()} "
                                                            f"({db.origin})") from e
            raise

    # --- stop / start ----------------------------------------------------------------------------

    def stop(self, hub: Hub) -> None:
        """Scale the hub to 0 and wait (on the pod watch) until its pods are gone."""
        if not hub.deployment:
            return
        current = self.kube.get(DEPLOYMENTS, hub.deployment, sub="scale")
        replicas = int((current.get("spec") or {}).get("replicas") or 0)
        if replicas:
            self._replicas[hub.deployment] = replicas
            log.info("scaling the hub Deployment %s from %d to 0", hub.deployment, replicas)
            self.kube.patch(DEPLOYMENTS, hub.deployment, {"spec": {"replicas": 0}}, sub="scale")
        if self.cache.wait(lambda c: True if not self.pods(hub) else None, self.ready_timeout) is None:
            names = ", ".join(p["metadata"]["name"] for p in self.pods(hub))
            raise DeploymentError(f"the hub's pods ({names}) did not go away within {self.ready_timeout}s")

    def start(self, hub: Hub) -> None:
        """Scale the hub back to its replicas (1 when unknown) and wait until a hub pod is Ready."""
        if not hub.deployment:
            log.warning("no hub Deployment in %s: install z2jh (helm) with the same release name and values; "
                        "it will use the restored hub-db-dir PVC and hub Secret", self.kube.namespace)
            return
        replicas = self._replicas.pop(hub.deployment, 0) or max(hub.replicas, 1)
        log.info("scaling the hub Deployment %s to %d", hub.deployment, replicas)
        self.kube.patch(DEPLOYMENTS, hub.deployment, {"spec": {"replicas": replicas}}, sub="scale")

        def ready(_c: PodCache) -> bool | None:
            for p in self.pods(hub):
                if (p.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                st = p.get("status") or {}
                if st.get("phase") == "Failed":
                    raise DeploymentError(f"the hub pod {p['metadata']['name']} failed after the restore",
                                          hint="kubectl logs it: the restored database or Secret may not fit "
                                               "this hub")
                if any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []):
                    return True
            return None

        if self.cache.wait(ready, self.ready_timeout) is None:
            raise DeploymentError(f"the hub did not become ready within {self.ready_timeout}s after the restore",
                                  hint="check the hub pod's events and log")

    # --- restore ---------------------------------------------------------------------------------

    def restore_db(self, hub: Hub, repo: Repository, artifact: Artifact, op: str,
                   recorded: dict[str, Any]) -> dict[str, Any]:
        """Write the DB into ``hub-db-dir`` through a mover (the hub stopped); create the PVC if missing.

        ``recorded``: what the run recorded of the hub (``describe()["hub"]``); its names are used when no
        hub Deployment is installed yet.
        """
        if not hub.db_claim:
            hub = replace(hub, db_claim=str(recorded.get("db_claim") or "hub-db-dir"))
        if self.kube.get_or_none(PVCS, hub.db_claim) is None:
            recorded_pvc = recorded.get("db_pvc") or {}
            record = {**recorded_pvc, "name": hub.db_claim} if recorded_pvc else {"name": hub.db_claim}
            log.info("creating the hub database volume PVC %s", hub.db_claim)
            try:
                self.kube.create(PVCS, make_pvc(record))
            except KubeConflict:
                pass  # created meanwhile (a re-run, or helm): use it
        users = [p["metadata"]["name"] for p in self.cache.users_of(hub.db_claim)
                 if ((p.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/managed-by") != "jdr"]
        if users:
            raise DeploymentError(f"refusing to replace the hub database: PVC {hub.db_claim} is mounted by "
                                  f"{', '.join(users)}", hint="stop the hub first")
        spec = MoverSpec(name=short_name("jdr-hubdb", op, "restore"), run=op, role="hub-restore",
                         args=("restore-hub-db", "--run", op, "--artifact-json",
                               json.dumps(artifact.to_dict(), separators=(",", ":")), "--path", hub.db_path),
                         mounts=(Mount(hub.db_claim, hub.db_dir, read_only=False),), security=hub_security(hub),
                         decrypts=True)
        result = self.movers.run(spec, repo)
        if result.get("integrity") != "ok":
            raise DeploymentError(f"the restored hub database failed its integrity check: {result.get('integrity')}")
        return result

    def restore_secret(self, hub: Hub, data: bytes, op: str) -> str:
        """Replace the ``hub`` Secret's data (create it if missing); the current one is kept as a copy.

        Returns the name of the copy ("" when there was no Secret).
        """
        try:
            record = json.loads(data)
            assert isinstance(record, dict) and isinstance(record.get("data"), dict)
        except (ValueError, AssertionError) as e:
            raise UsageError("the stored hub Secret is not a Secret record (JSON with data)") from e
        name = hub.secret or record["metadata"]["name"]
        current = self.kube.get_or_none(SECRETS, name)
        if current is None:
            body = {**record, "metadata": {**record["metadata"], "name": name}}
            log.info("creating the hub Secret %s", name)
            self.kube.create(SECRETS, body)
            return ""
        stamp = utcnow().strftime("%Y%m%dt%H%M%Sz")
        copy_name = f"{name}-jdr-previous-{stamp}"[:253]
        try:
            self.kube.create(SECRETS, make_secret_copy(secret_record(current), copy_name,
                                                       jdr_labels(op, "previous-secret")))
        except KubeConflict:
            pass  # taken this very second by an earlier attempt of the same restore
        current["data"] = dict(record["data"])
        current["type"] = current.get("type") or record.get("type") or "Opaque"
        try:
            self.kube.replace(SECRETS, name, current)
        except KubeNotFound:
            self.kube.create(SECRETS, {**record, "metadata": {**record["metadata"], "name": name}})
        log.info("replaced the data of the hub Secret %s (previous kept as Secret %s)", name, copy_name)
        return copy_name
