"""DR drills on Kubernetes, confined to one scratch namespace that the administrator created once.

Drills need no cluster-wide write. The administrator creates the namespace named by
``deployment.kubernetes.drill_namespace`` once, with a Role for jdr's ServiceAccount there
(``cronjobs/drill/``, see ``restore/DRILL.md``); jdr never creates, labels or deletes namespaces, PVs or
RoleBindings. :class:`KubernetesDrillTarget` implements :class:`dr.deployments.drill.DrillTarget`:

- ``prepare`` takes the namespace by creating the ConfigMap ``jdr-drill`` there (a create is atomic: a
  second drill gets 409 and is refused while the first one's holder lives), annotated with its holder
  (this pod, from ``POD_NAME``/``POD_NAMESPACE``, with its uid; else host, pid and the process's start
  time) and the start time. It checks that the storage class the drill's PVCs will use deletes its
  volumes (a retaining class would leave the drill's copies behind, and jdr may not delete PVs), then
  copies into the namespace only the keys of the mover Secret that restore movers need (repository
  credentials and the age identity): a pod can only read Secrets of its own namespace.
- ``restore_hub_db``: the hub database is downloaded by the drill process itself and checked there
  (integrity, schema, users), as on ``local``: no hub is started in the scratch namespace (KubeSpawner
  would spawn into the namespace its state names, i.e. production). A PostgreSQL/MySQL dump is restored
  into a scratch database on the hub's own database server and dropped after (:mod:`.hubdb_drill`).
- ``restore_volume`` creates a PVC in the scratch namespace shaped like the recorded one (size, access
  modes; class ``drill_storage_class``, else as recorded, else ``storage_class``, else the cluster default)
  and runs the adapter's restore mover into it, as the volume's owner (every file's size and SHA-256 checked
  while extracting). Volumes whose run holds only a snapshot are not drilled (a VolumeSnapshot cannot
  source a PVC in another namespace): the operation reports them so.
- ``verify_volume`` runs a second mover that mounts the restored PVC read-only and reads every file back
  against the index (``jdr agent verify-volume``, :mod:`dr.deployments.kubernetes.drill_agent`).
- ``cleanup`` deletes what the drill made in the namespace — its pods, PVCs (waited for until gone, so
  their PVs are reclaimed by the class's ``Delete`` policy), the Secret copy — and the ConfigMap last.
  ``--keep`` leaves everything and marks the ConfigMap kept.
- ``leftovers``: the ConfigMap of a drill whose holder is gone (pod deleted, replaced or finished;
  process dead on this host); ``remove_leftover`` cleans the namespace the same way. A kept drill is a
  leftover too once its holder is gone — the namespace holds one drill at a time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dr.archive.index import load_index
from dr.deployments.drill import (
    NOTEBOOK_SAMPLE,
    HubCheck,
    Leftover,
    RestoredVolume,
    VolumeCheck,
    index_file_count,
)
from dr.deployments.kubernetes.api import (
    PODS,
    PVCS,
    SECRETS,
    Kube,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeNotFound,
    Obj,
    Resource,
)
from dr.deployments.kubernetes.mover import MoverFailed, Movers, PodCache, mover_config
from dr.deployments.kubernetes.objects import (
    DATA_MOUNT,
    KEY_ANNOTATION,
    MANAGED_BY,
    READER,
    ROLE_LABEL,
    WRITER,
    Mount,
    MoverConfig,
    MoverSpec,
    jdr_labels,
    make_pvc,
    short_name,
    volume_security,
)
from dr.errors import ConfigError, DeploymentError
from dr.hubdb.info import DbInfo
from dr.model import VolumeItem
from dr.repository.artifacts import drain
from dr.repository.repository import Repository
from dr.settings import Settings
from dr.util.procs import pid_alive
from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
STORAGE_CLASSES = Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False)

DRILL_ROLE = "drill"  # value of jdr.hub.jupyter.org/role on what a drill creates
HOLDER_NAME = "jdr-drill"  # the ConfigMap that says which drill holds the scratch namespace
HOLDER_ANNOTATION = "jdr.hub.jupyter.org/holder"  # JSON: {"pod", "namespace", "uid"} or {"host", "pid", …}
STARTED_ANNOTATION = "jdr.hub.jupyter.org/started"
SOURCE_ANNOTATION = "jdr.hub.jupyter.org/source-namespace"
KEPT_ANNOTATION = "jdr.hub.jupyter.org/kept"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
PVC_TIMEOUT = 300.0  # seconds for the drill's PVCs to be gone after their deletion


def drill_selector() -> str:
    return f"{MANAGED_BY}=jdr,{ROLE_LABEL}"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot), to tell it from a later reuse of its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


class KubernetesDrillTarget:
    """A :class:`dr.deployments.drill.DrillTarget` in the configured scratch namespace (see the module doc)."""

    kind = "kubernetes"

    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.k = settings.deployment.kubernetes
        self.kube = kube or Kube.connect(self.k.kubeconfig, self.k.namespace)
        self.production = self.kube.namespace
        self.scratch = self.k.drill_namespace
        self.namespace: str | None = None  # set while this drill holds the scratch namespace
        self.drill = ""
        self._cache: PodCache | None = None
        self._movers: Movers | None = None
        self._tmp: Path | None = None
        self._repo: Repository | None = None  # for mover results too large for a termination message

    @property
    def where(self) -> str:
        return f"namespace {self.scratch}" if self.scratch else "(no scratch namespace)"

    def _scratch(self) -> str:
        if not self.scratch:
            raise ConfigError("deployment.kubernetes.drill_namespace: required for drills on Kubernetes",
                              hint="create a namespace for drills once, apply cronjobs/drill/ there (restore/DRILL.md) "
                                   "and name it here")
        if self.scratch == self.production:
            raise ConfigError(f"deployment.kubernetes.drill_namespace: {self.scratch} is the production namespace")
        return self.scratch

    # --- the holder -----------------------------------------------------------------------------

    def _holder(self) -> dict[str, Any]:
        pod = os.environ.get("POD_NAME", "")
        if pod:
            ns = os.environ.get("POD_NAMESPACE", "") or self.production
            holder: dict[str, Any] = {"pod": pod, "namespace": ns}
            try:
                found = self.kube.get(PODS, pod, ns)
                holder["uid"] = str((found.get("metadata") or {}).get("uid") or "")
            except KubeError as e:
                log.debug("cannot read the drill's own pod %s/%s: %s", ns, pod, e)
            return holder
        pid = os.getpid()
        return {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid)}

    def _holder_gone(self, holder: dict[str, Any]) -> bool | None:
        """True: the drill that holds the namespace is dead; False: alive; None: cannot tell."""
        if holder.get("pod"):
            try:
                pod = self.kube.get(PODS, str(holder["pod"]), str(holder.get("namespace") or self.production))
            except KubeNotFound:
                return True
            except KubeError as e:
                log.info("cannot tell whether the drill pod %s still runs: %s", holder["pod"], e)
                return None
            md = pod.get("metadata") or {}
            if holder.get("uid") and md.get("uid") != holder["uid"]:
                return True  # a new pod of the same name
            return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if holder.get("host") and holder["host"] == socket.gethostname():
            pid = int(holder.get("pid") or 0)
            if not pid_alive(pid):
                return True
            start = str(holder.get("pid_start") or "")
            return bool(start) and _process_start(pid) != start
        return None

    def _read_holder(self, ns: str) -> tuple[Obj | None, dict[str, Any]]:
        cm = self.kube.get_or_none(CONFIGMAPS, HOLDER_NAME, ns)
        ann = ((cm or {}).get("metadata") or {}).get("annotations") or {}
        try:
            holder = json.loads(ann.get(HOLDER_ANNOTATION) or "{}")
        except ValueError:
            holder = {}
        return cm, holder if isinstance(holder, dict) else {}

    # --- leftovers ------------------------------------------------------------------------------

    def leftovers(self) -> list[Leftover]:
        if not self.scratch or self.scratch == self.production:
            return []  # prepare() says why
        try:
            cm, holder = self._read_holder(self.scratch)
            if cm is None:
                stray = self._drill_objects(self.scratch)
                if not stray:
                    return []
                return [Leftover(where=f"namespace {self.scratch}", drill="",
                                 details={"namespace": self.scratch, "objects": stray})]
        except KubeError as e:
            log.warning("cannot look for an earlier drill's leftovers in namespace %s: %s", self.scratch, e)
            return []
        if self._holder_gone(holder) is not True:
            return []
        md = cm.get("metadata") or {}
        ann = md.get("annotations") or {}
        return [Leftover(where=f"namespace {self.scratch}", drill=str((md.get("labels") or {}).get(
            "jdr.hub.jupyter.org/run", "")), details={"namespace": self.scratch, "holder": holder,
                                                      "started": ann.get(STARTED_ANNOTATION, ""),
                                                      "kept": ann.get(KEPT_ANNOTATION) == "true"})]

    def scratch_databases(self) -> list[Leftover]:
        """Scratch databases of earlier drills on the production hub's database server (none for an SQLite
        hub); the drill's sweep decides by the repository's drill locks which to drop."""
        from dr.deployments.kubernetes.hubdb_drill import production_server, scratch_leftovers

        server = production_server(self.kube, self.settings)
        return [] if server is None else scratch_leftovers(server, own=self.drill)

    def remove_leftover(self, leftover: Leftover) -> None:
        if leftover.details.get("database"):
            from dr.deployments.kubernetes.hubdb_drill import drop_scratch, production_server

            server = production_server(self.kube, self.settings)
            if server is None:
                raise DeploymentError(f"{leftover.where}: the hub has no database server any more; not touching it")
            drop_scratch(server, leftover)
            return
        ns = str(leftover.details.get("namespace") or "")
        if ns != self.scratch:
            raise DeploymentError(f"namespace {ns} is not the drill namespace {self.scratch}; not touching it")
        self._clean(ns)
        log.info("cleaned the scratch namespace %s of drill %s, which never cleaned up", ns,
                 leftover.drill or "(unknown)")

    # --- the drill --------------------------------------------------------------------------------

    def prepare(self, drill: str) -> str:
        ns = self._scratch()
        cfg = self._mover_config()  # configuration errors before anything is created
        self._check_storage_class()
        annotations = {HOLDER_ANNOTATION: json.dumps(self._holder(), sort_keys=True),
                       STARTED_ANNOTATION: iso(utcnow()), SOURCE_ANNOTATION: self.production}
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": HOLDER_NAME, "labels": jdr_labels(drill, DRILL_ROLE), "annotations": annotations},
                "data": {"drill": drill}}
        try:
            self.kube.create(CONFIGMAPS, body, ns)
        except KubeConflict as e:
            _, holder = self._read_holder(ns)
            raise DeploymentError(f"the scratch namespace {ns} is held by another drill (ConfigMap {HOLDER_NAME}: "
                                  f"{json.dumps(holder, sort_keys=True)})",
                                  hint="wait for it to end; a dead drill's hold is removed by the next drill") from e
        except KubeNotFound as e:
            raise ConfigError(f"deployment.kubernetes.drill_namespace: namespace {ns} does not exist",
                              hint="create it once and apply cronjobs/drill/ there (restore/DRILL.md)") from e
        except KubeForbidden as e:
            raise DeploymentError(f"jdr may not work in the drill namespace {ns}: {e}",
                                  hint="apply cronjobs/drill/ (the Role jdr-drill and its binding) in that namespace "
                                       "(restore/DRILL.md, RBAC)") from e
        self.namespace, self.drill = ns, drill
        self._copy_mover_secret(ns)
        self._cache = PodCache(self.kube, ns).start()
        self._movers = Movers(self.kube, self._cache, cfg)
        log.info("drill %s: holds the scratch namespace %s", drill, ns)
        return ns

    def restore_hub_db(self, fetch: Callable[[Path], DbInfo]) -> DbInfo:
        """Download and check the hub database in the drill process (why not in a PVC: the module doc)."""
        self._tmp = Path(tempfile.mkdtemp(prefix="jdr-drill-hubdb-"))
        info = fetch(self._tmp / "jupyterhub.sqlite")
        if info.dump_format == "sqlite":
            return info
        from dr.deployments.kubernetes.hubdb_drill import drill_server_db

        return drill_server_db(self.kube, self.settings, self._tmp / "jupyterhub.sqlite", info, self.drill)

    def restore_volume(self, repo: Repository, item: VolumeItem) -> RestoredVolume:
        ns = self._ns()
        self._repo = repo
        if item.archive is None or item.index is None:
            raise DeploymentError(f"{item.label}: the run holds no archive of this volume (snapshot method); "
                                  "a VolumeSnapshot cannot be restored into another namespace, so it is not drilled")
        with repo.open_artifact(item.index) as raw:
            index_files = index_file_count(load_index(raw))
            drain(raw)
        claim = self._claim_name(item)
        record: dict[str, Any] = dict(item.source.get("pvc") or {})
        record.update(name=claim, labels={}, annotations={})
        if self.k.drill_storage_class:
            record["storageClassName"] = self.k.drill_storage_class
        annotations = {KEY_ANNOTATION: item.key}
        if item.source.get("pvc"):
            annotations["jdr.hub.jupyter.org/source-pvc"] = f"{self.production}/{item.source['pvc'].get('name', '')}"
        body = make_pvc(record, storage_class=self.k.storage_class, labels=jdr_labels(self.drill, "drill-volume"),
                        annotations=annotations)
        self.kube.create(PVCS, body, ns)
        item_json = json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))
        security = volume_security(item.source, self.k.volume_uid, self.k.volume_gid, writes=True)
        spec = MoverSpec(name=short_name("jdr-drill-rs", self.drill, item.key), run=self.drill, role="restore",
                         args=("restore-volume", "--run", self.drill, "--root", DATA_MOUNT, "--item-json",
                               item_json, "--discard-previous"),
                         mounts=(Mount(claim, DATA_MOUNT, read_only=False),), security=security, decrypts=True)
        result, _ = self._mover().run_as_owner(spec, repo, privileged=WRITER, label=item.label)
        return RestoredVolume(target=f"{ns}/{claim}", files=int(result.get("files", 0)),
                              bytes=int(result.get("bytes", 0)), index_files=index_files)

    def verify_volume(self, item: VolumeItem, restored: RestoredVolume,
                      notebooks: int = NOTEBOOK_SAMPLE) -> VolumeCheck:
        claim = restored.target.split("/", 1)[-1]
        item_json = json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))
        security = volume_security(item.source, self.k.volume_uid, self.k.volume_gid, writes=False)
        spec = MoverSpec(name=short_name("jdr-drill-vf", self.drill, item.key), run=self.drill, role="verify",
                         args=("verify-volume", "--run", self.drill, "--root", DATA_MOUNT, "--item-json", item_json,
                               "--notebooks", str(notebooks)),
                         mounts=(Mount(claim, DATA_MOUNT, read_only=True),), security=security, decrypts=True)
        t0 = time.monotonic()
        try:
            result, _ = self._mover().run_as_owner(spec, self._repo, privileged=READER, label=item.label)
        except (MoverFailed, KubeError) as e:
            return VolumeCheck(files_on_disk=0, problems=(f"the verification mover failed: {e}",))
        log.debug("%s: verified by mover %s in %.1f s (%s files, %s bytes read back)", item.label, spec.name,
                  time.monotonic() - t0, result.get("checked_files"), result.get("checked_bytes"))
        problems = [str(p) for p in result.get("problems") or []]
        files = int(result.get("files_on_disk", 0))
        if files != restored.index_files:
            problems.insert(0, f"{files} files restored, the index lists {restored.index_files}")
        return VolumeCheck(files_on_disk=files, notebooks_checked=int(result.get("notebooks_checked", 0)),
                           notebooks_total=int(result.get("notebooks_total", 0)),
                           validator=str(result.get("validator") or "json"), problems=tuple(problems))

    def start_hub(self, timeout: float = 60.0) -> HubCheck:
        return HubCheck("skipped", "on Kubernetes no hub is started in the scratch namespace: KubeSpawner would "
                                   "start servers in the namespace its state names (production)")

    def cleanup(self, keep: bool = False) -> None:
        if self._cache is not None:
            self._cache.stop()
            self._cache = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self.namespace is None:
            return
        if keep:
            self.kube.patch(CONFIGMAPS, HOLDER_NAME, {"metadata": {"annotations": {KEPT_ANNOTATION: "true"}}},
                            self.namespace)
            log.info("drill %s: scratch namespace %s left as it is (--keep); the next drill cleans it", self.drill,
                     self.namespace)
            return
        self._clean(self.namespace)
        log.info("drill %s: scratch namespace %s cleaned", self.drill, self.namespace)
        self.namespace = None

    # --- internals ----------------------------------------------------------------------------------

    def _ns(self) -> str:
        if self.namespace is None:
            raise DeploymentError("the drill's scratch namespace has not been prepared")
        return self.namespace

    def _mover(self) -> Movers:
        if self._movers is None:
            raise DeploymentError("the drill's scratch namespace has not been prepared")
        return self._movers

    def _claim_name(self, item: VolumeItem) -> str:
        recorded = str((item.source.get("pvc") or {}).get("name") or "")
        if item.source.get("subPath"):  # a home on a shared (static) volume: each gets a volume of its own
            return short_name("jdr-drill-vol", item.key)
        if recorded and re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", recorded):
            return recorded  # the production name: easy to recognise with --keep
        return short_name("jdr-drill-vol", item.key)

    def _mover_image(self) -> str:
        if self.k.mover_image:
            return self.k.mover_image
        pod_name = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "")
        ns = os.environ.get("POD_NAMESPACE", "") or self.production
        pod = self.kube.get_or_none(PODS, pod_name, ns) if pod_name else None
        images = [c.get("image", "") for c in ((pod or {}).get("spec") or {}).get("containers") or []]
        if not images or not images[0]:
            raise ConfigError("deployment.kubernetes.mover_image: required when jdr does not run in a pod "
                              "(it defaults to that pod's own image)",
                              hint="set it to jdr's image, or set POD_NAME (and POD_NAMESPACE) in jdr's pod")
        return str(images[0])

    def _mover_config(self) -> MoverConfig:
        # No mover ServiceAccount: the production one does not exist in the scratch namespace.
        return mover_config(self.settings, self._mover_image())

    def _check_storage_class(self) -> None:
        """Refuse a storage class that retains its volumes: the drill's copies of users' homes would outlive
        it, and jdr may not delete PersistentVolumes (it has no cluster-wide write)."""
        wanted = self.k.drill_storage_class or self.k.storage_class
        try:
            classes, _ = self.kube.list(STORAGE_CLASSES)
        except KubeForbidden:
            log.warning("cannot read StorageClasses (list storageclasses): not checking that the drill's volumes "
                        "are deleted with their claims")
            return
        by_name = {str(c["metadata"]["name"]): c for c in classes}
        default = [c for c in classes
                   if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
        chosen = by_name.get(wanted) if wanted else (default[0] if default else None)
        if chosen is not None and chosen.get("reclaimPolicy", "Delete") != "Delete":
            raise ConfigError(f"storage class {chosen['metadata']['name']} retains its volumes (reclaimPolicy "
                              f"{chosen.get('reclaimPolicy')}): the drill's copies of users' homes would outlive it",
                              hint="set deployment.kubernetes.drill_storage_class to a class with reclaimPolicy "
                                   "Delete")

    def _copy_mover_secret(self, ns: str) -> None:
        """Copy into the scratch namespace only the keys restore movers need (credentials, the age identity)."""
        name = self.k.mover_env_from_secret
        if not name:
            return
        try:
            secret = self.kube.get(SECRETS, name, self.production)
        except KubeNotFound as e:
            raise ConfigError(f"deployment.kubernetes.mover_env_from_secret: no Secret {name} in "
                              f"{self.production}") from e
        keys = {*self.k.mover_secret_keys, self.settings.encryption.key_env} - {""}
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "labels": jdr_labels(self.drill, DRILL_ROLE),
                             "annotations": {"jdr.hub.jupyter.org/copy-of": f"{self.production}/{name}"}},
                "type": secret.get("type") or "Opaque",
                "data": {k: v for k, v in (secret.get("data") or {}).items() if k in keys}}
        try:
            self.kube.create(SECRETS, body, ns)
        except KubeConflict:
            self.kube.delete(SECRETS, name, ns)  # a copy a crashed drill left: replaced with today's keys
            self.kube.create(SECRETS, body, ns)

    def _drill_objects(self, ns: str) -> list[str]:
        found = []
        for res in (PODS, PVCS, SECRETS):
            items, _ = self.kube.list(res, ns, label_selector=drill_selector())
            found += [f"{res.kind}/{o['metadata']['name']}" for o in items]
        return found

    def _clean(self, ns: str) -> None:
        """Delete every object a drill made in ``ns`` (pods, PVCs, the Secret copy), wait until the PVCs are
        gone (their PVs are then reclaimed by their class), and release the namespace (the ConfigMap, last)."""
        claims, version = self.kube.list(PVCS, ns, label_selector=drill_selector())
        for res in (PODS, SECRETS):
            items, _ = self.kube.list(res, ns, label_selector=drill_selector())
            for obj in items:
                self.kube.delete(res, obj["metadata"]["name"], ns, grace_seconds=0 if res is PODS else None)
        for pvc in claims:
            self.kube.delete(PVCS, pvc["metadata"]["name"], ns)
        self._wait_pvcs_gone(ns, {str(p["metadata"]["name"]) for p in claims}, version)
        self.kube.delete(CONFIGMAPS, HOLDER_NAME, ns)

    def _wait_pvcs_gone(self, ns: str, names: set[str], version: str) -> None:
        """Watch (from before the deletions, so no event is missed) until every PVC in ``names`` is deleted."""
        left = set(names)
        deadline = time.monotonic() + PVC_TIMEOUT
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeploymentError(f"the drill's PVCs in {ns} were not gone within {PVC_TIMEOUT:.0f}s: "
                                      f"{', '.join(sorted(left))}", hint=f"kubectl -n {ns} describe pvc")
            try:
                for kind, obj in self.kube.watch(PVCS, ns, resource_version=version, label_selector=drill_selector(),
                                                 timeout_seconds=max(1, min(int(remaining), 30))):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind == "DELETED":
                        left.discard(str(obj["metadata"]["name"]))
                        if not left:
                            return
            except KubeGone:
                items, version = self.kube.list(PVCS, ns, label_selector=drill_selector())
                left &= {str(o["metadata"]["name"]) for o in items}
