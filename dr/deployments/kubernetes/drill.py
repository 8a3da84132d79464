"""DR drills on Kubernetes: a scratch namespace, created and deleted by jdr, that production never sees.

:class:`KubernetesDrillTarget` implements :class:`dr.deployments.drill.DrillTarget`:

- ``prepare`` creates the namespace ``jdr-drill-<drill>`` labelled ``app.kubernetes.io/managed-by: jdr``,
  ``jdr.hub.jupyter.org/role: drill``, ``jdr.hub.jupyter.org/run: <drill>`` and annotated with its
  holder (this pod, from ``POD_NAME``/``POD_NAMESPACE``, with its uid; else host, pid and the process's
  start time), the start time and the production namespace. When jdr runs as a ServiceAccount it binds
  that account, in the new namespace only, to the ClusterRole ``jdr-drill-scratch`` (see
  ``restore/DRILL.md`` for the RBAC). The mover Secret (``mover_env_from_secret``: repository credentials,
  encryption key) is copied into the namespace, because a pod can only read Secrets of its own namespace.
- ``restore_hub_db``: the hub database is downloaded by the drill process itself and checked there
  (integrity, schema, users), as on ``local``. A scratch PVC for it would add no evidence the drill can
  use: no hub is started in the scratch namespace (KubeSpawner would spawn into the namespace its state
  names, i.e. production), the database's checks are the same wherever the file lies, and the mover path
  that writes a database into a hub PVC is the adapter's restore, exercised by its own tests. The time is
  download and check only; a real restore adds scaling the hub down and up.
- ``restore_volume`` creates a PVC in the scratch namespace shaped like the recorded one (size, access
  modes, storage class as recorded, else ``deployment.kubernetes.storage_class``, else the cluster
  default) and runs the adapter's restore mover (``jdr agent restore-volume``) into it: every file's size
  and SHA-256 against the index while extracting, the artifact's checksum at its end. Volumes whose run
  holds only a snapshot are not drilled (a VolumeSnapshot cannot source a PVC in another namespace
  without copying its content): the operation reports them so.
- ``verify_volume`` runs a second mover that mounts the restored PVC read-only and reads every file back
  against the index, counts the files and checks a sample of notebooks (``jdr agent verify-volume``,
  :mod:`dr.deployments.kubernetes.drill_agent`).
- ``start_hub``: skipped (see above).
- ``cleanup`` deletes the namespace and waits until it is gone (bounded). PVs bound to its PVCs go by
  their ``Delete`` reclaim policy: a PV whose class retains is switched to ``Delete`` before the namespace
  goes, and a PV still ``Released`` afterwards (claim in the scratch namespace) is deleted. Nothing outside
  the scratch namespace is created, patched or deleted, except those PVs; production is only read (the
  mover Secret, jdr's own pod).
- ``leftovers`` are namespaces so labelled whose holder is gone (its pod deleted, replaced or finished;
  its process dead on this host); ``remove_leftover`` deletes them the same way. Namespaces kept with
  ``--keep`` (annotation ``jdr.hub.jupyter.org/kept``) and namespaces already terminating are left alone.
"""

from __future__ import annotations

import contextlib
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
    SCRATCH_PREFIX,
    HubCheck,
    Leftover,
    RestoredVolume,
    VolumeCheck,
    index_file_count,
)
from dr.deployments.kubernetes.api import (
    PODS,
    PVCS,
    PVS,
    SECRETS,
    Kube,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    Obj,
    Resource,
)
from dr.deployments.kubernetes.mover import MoverFailed, Movers, PodCache
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
    mover_env,
    short_name,
)
from dr.deployments.kubernetes.snapshots import wait_object
from dr.errors import ConfigError, DeploymentError
from dr.hubdb.info import DbInfo
from dr.model import VolumeItem
from dr.repository.artifacts import drain
from dr.repository.repository import Repository
from dr.settings import Settings
from dr.util.procs import pid_alive
from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
SELF_REVIEWS = Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", namespaced=False)

DRILL_ROLE = "drill"  # value of jdr.hub.jupyter.org/role on the scratch namespace
HOLDER_ANNOTATION = "jdr.hub.jupyter.org/holder"  # JSON: {"pod", "namespace", "uid"} or {"host", "pid", …}
STARTED_ANNOTATION = "jdr.hub.jupyter.org/started"
SOURCE_ANNOTATION = "jdr.hub.jupyter.org/source-namespace"
KEPT_ANNOTATION = "jdr.hub.jupyter.org/kept"
SCRATCH_CLUSTER_ROLE = "jdr-drill-scratch"  # bound in each scratch namespace to jdr's ServiceAccount
ROLE_ENV = "JDR_DRILL_SCRATCH_ROLE"  # overrides SCRATCH_CLUSTER_ROLE (installations that rename it)
SA_TIMEOUT = 60.0  # seconds for the new namespace's default ServiceAccount to appear
NAMESPACE_TIMEOUT = 300.0  # seconds for a deleted scratch namespace to be gone
PV_TIMEOUT = 60.0  # seconds for the PVs of a deleted scratch namespace to be reclaimed


def scratch_namespace(drill: str) -> str:
    """``jdr-drill-<drill>``: lower case, DNS-1123, at most 63 characters."""
    tail = re.sub(r"[^a-z0-9-]+", "-", drill.lower()).strip("-")
    return (SCRATCH_PREFIX + tail)[:63].rstrip("-")


def drill_selector() -> str:
    return f"{MANAGED_BY}=jdr,{ROLE_LABEL}={DRILL_ROLE}"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot), to tell it from a later reuse of its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


class KubernetesDrillTarget:
    """A :class:`dr.deployments.drill.DrillTarget` in a scratch namespace (see the module doc)."""

    kind = "kubernetes"

    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.k = settings.deployment.kubernetes
        self.kube = kube or Kube.connect(self.k.kubeconfig, self.k.namespace)
        self.production = self.kube.namespace
        self.namespace: str | None = None
        self.drill = ""
        self._created = False
        self._cache: PodCache | None = None
        self._movers: Movers | None = None
        self._tmp: Path | None = None
        self._repo: Repository | None = None  # for mover results too large for a termination message

    @property
    def where(self) -> str:
        return f"namespace {self.namespace}" if self.namespace else "(no scratch namespace)"

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
        """True: the drill that made the namespace is dead; False: alive; None: cannot tell."""
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

    # --- leftovers ------------------------------------------------------------------------------

    def leftovers(self) -> list[Leftover]:
        try:
            items, _ = self.kube.list(NAMESPACES, label_selector=drill_selector())
        except KubeError as e:
            log.warning("cannot list earlier drills' scratch namespaces: %s", e)
            return []
        found: list[Leftover] = []
        for ns in items:
            md = ns.get("metadata") or {}
            name = str(md.get("name") or "")
            ann = md.get("annotations") or {}
            if name == self.namespace or md.get("deletionTimestamp") or ann.get(KEPT_ANNOTATION) == "true":
                continue
            try:
                holder = json.loads(ann.get(HOLDER_ANNOTATION) or "{}")
            except ValueError:
                holder = {}
            if not isinstance(holder, dict) or self._holder_gone(holder) is not True:
                continue
            found.append(Leftover(where=f"namespace {name}", drill=str((md.get("labels") or {}).get(
                "jdr.hub.jupyter.org/run", "")), details={"namespace": name, "holder": holder,
                                                          "started": ann.get(STARTED_ANNOTATION, "")}))
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        name = str(leftover.details.get("namespace") or "")
        ns = self.kube.get_or_none(NAMESPACES, name) if name else None
        if ns is None:
            return
        labels = (ns.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY) != "jdr" or labels.get(ROLE_LABEL) != DRILL_ROLE:
            raise DeploymentError(f"namespace {name} is not labelled as a jdr drill's; refusing to delete it")
        self._delete_namespace(name)
        log.info("removed the scratch namespace %s of drill %s, which never cleaned up", name, leftover.drill)

    # --- the drill --------------------------------------------------------------------------------

    def prepare(self, drill: str) -> str:
        cfg = self._mover_config()  # configuration errors before anything is created
        name = scratch_namespace(drill)
        if name == self.production:
            raise ConfigError(f"the scratch namespace {name} would be the production namespace")
        annotations = {HOLDER_ANNOTATION: json.dumps(self._holder(), sort_keys=True),
                       STARTED_ANNOTATION: iso(utcnow()), SOURCE_ANNOTATION: self.production}
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": jdr_labels(drill, DRILL_ROLE), "annotations": annotations}}
        try:
            self.kube.create(NAMESPACES, body)
        except KubeConflict as e:
            raise DeploymentError(f"the scratch namespace {name} exists already") from e
        self.namespace, self.drill, self._created = name, drill, True
        self._bind_self(name)
        self._copy_mover_secret(name)
        self._wait_default_service_account(name)
        self._cache = PodCache(self.kube, name).start()
        self._movers = Movers(self.kube, self._cache, cfg)
        log.info("drill %s: scratch namespace %s created", drill, name)
        return name

    def restore_hub_db(self, fetch: Callable[[Path], DbInfo]) -> DbInfo:
        """Download and check the hub database in the drill process (why not in a PVC: the module doc)."""
        self._tmp = Path(tempfile.mkdtemp(prefix="jdr-drill-hubdb-"))
        return fetch(self._tmp / "jupyterhub.sqlite")

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
        annotations = {KEY_ANNOTATION: item.key}
        if item.source.get("pvc"):
            annotations["jdr.hub.jupyter.org/source-pvc"] = f"{self.production}/{item.source['pvc'].get('name', '')}"
        body = make_pvc(record, storage_class=self.k.storage_class, labels=jdr_labels(self.drill, "drill-volume"),
                        annotations=annotations)
        self.kube.create(PVCS, body, ns)
        item_json = json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))
        spec = MoverSpec(name=short_name("jdr-drill-rs", self.drill, item.key), run=self.drill, role="restore",
                         args=("restore-volume", "--run", self.drill, "--root", DATA_MOUNT, "--item-json",
                               item_json, "--discard-previous"),
                         mounts=(Mount(claim, DATA_MOUNT, read_only=False),), security=WRITER)
        result = self._mover().run(spec, repo)
        return RestoredVolume(target=f"{ns}/{claim}", files=int(result.get("files", 0)),
                              bytes=int(result.get("bytes", 0)), index_files=index_files)

    def verify_volume(self, item: VolumeItem, restored: RestoredVolume,
                      notebooks: int = NOTEBOOK_SAMPLE) -> VolumeCheck:
        claim = restored.target.split("/", 1)[-1]
        item_json = json.dumps(replace(item, source={}, warnings=()).to_dict(), separators=(",", ":"))
        spec = MoverSpec(name=short_name("jdr-drill-vf", self.drill, item.key), run=self.drill, role="verify",
                         args=("verify-volume", "--run", self.drill, "--root", DATA_MOUNT, "--item-json", item_json,
                               "--notebooks", str(notebooks)),
                         mounts=(Mount(claim, DATA_MOUNT, read_only=True),), security=READER)
        t0 = time.monotonic()
        try:
            result = self._mover().run(spec, self._repo)
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
        if not self._created or self.namespace is None:
            return
        if keep:
            self.kube.patch(NAMESPACES, self.namespace, {"metadata": {"annotations": {KEPT_ANNOTATION: "true"}}})
            log.info("drill %s: scratch namespace %s kept (--keep)", self.drill, self.namespace)
            return
        self._delete_namespace(self.namespace)
        self._created = False
        log.info("drill %s: scratch namespace %s deleted", self.drill, self.namespace)

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
        return MoverConfig(image=self._mover_image(), command=tuple(self.k.mover_command),
                           env=mover_env(self.settings), env_from_secret=self.k.mover_env_from_secret,
                           timeout=self.k.mover_timeout, labels=dict(self.k.pod_labels),
                           requests=dict(self.k.mover_requests), limits=dict(self.k.mover_limits))

    def _bind_self(self, ns: str) -> None:
        """Running as a ServiceAccount: bind it, in the scratch namespace only, to the scratch ClusterRole."""
        try:
            review = self.kube.create(SELF_REVIEWS, {"apiVersion": "authentication.k8s.io/v1",
                                                     "kind": "SelfSubjectReview"})
        except KubeError as e:
            log.debug("SelfSubjectReview failed (%s); not binding a scratch role", e)
            return
        user = str((((review.get("status") or {}).get("userInfo")) or {}).get("username") or "")
        parts = user.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return  # a person's or an admin's credentials: their own rights apply
        role = os.environ.get(ROLE_ENV) or SCRATCH_CLUSTER_ROLE
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "jdr-drill", "labels": jdr_labels(self.drill, DRILL_ROLE)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": parts[3], "namespace": parts[2]}]}
        try:
            self.kube.create(ROLEBINDINGS, body, ns)
        except KubeForbidden as e:
            raise DeploymentError(f"cannot grant the drill its rights in the scratch namespace {ns}: {e}",
                                  hint=f"install the ClusterRole {role} and let jdr bind it (restore/DRILL.md, "
                                       "RBAC)") from e

    def _copy_mover_secret(self, ns: str) -> None:
        name = self.k.mover_env_from_secret
        if not name:
            return
        try:
            secret = self.kube.get(SECRETS, name, self.production)
        except KubeNotFound as e:
            raise ConfigError(f"deployment.kubernetes.mover_env_from_secret: no Secret {name} in "
                              f"{self.production}") from e
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "labels": jdr_labels(self.drill, DRILL_ROLE),
                             "annotations": {"jdr.hub.jupyter.org/copy-of": f"{self.production}/{name}"}},
                "type": secret.get("type") or "Opaque", "data": dict(secret.get("data") or {})}
        self.kube.create(SECRETS, body, ns)

    def _wait_default_service_account(self, ns: str) -> None:
        """Pods are refused until the namespace's ``default`` ServiceAccount exists (a controller makes it)."""
        deadline = time.monotonic() + SA_TIMEOUT
        while self.kube.get_or_none(SERVICEACCOUNTS, "default", ns) is None:
            if time.monotonic() > deadline:
                raise DeploymentError(f"the ServiceAccount default of namespace {ns} did not appear within "
                                      f"{SA_TIMEOUT:.0f}s", hint="is kube-controller-manager running?")
            time.sleep(0.2)

    def _delete_namespace(self, name: str) -> None:
        """Delete a scratch namespace, wait until it is gone, then make sure its PVs are gone too."""
        pvs: list[str] = []
        try:
            claims, _ = self.kube.list(PVCS, name)
        except KubeNotFound:
            claims = []
        for pvc in claims:
            pv_name = str((pvc.get("spec") or {}).get("volumeName") or "")
            if not pv_name:
                continue
            pvs.append(pv_name)
            pv = self.kube.get_or_none(PVS, pv_name)
            if pv is not None and _claimed_from(pv, name) and \
                    (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Delete":
                # the storage class retains: the scratch copy must not outlive the drill
                self.kube.patch(PVS, pv_name, {"spec": {"persistentVolumeReclaimPolicy": "Delete"}})
        self.kube.delete(NAMESPACES, name, propagation="Background")
        try:
            wait_object(self.kube, NAMESPACES, name, lambda o: o is None, NAMESPACE_TIMEOUT)
        except TimeoutError:
            raise DeploymentError(f"the scratch namespace {name} was not gone within {NAMESPACE_TIMEOUT:.0f}s "
                                  "(it is being deleted)", hint=f"kubectl get namespace {name} -o yaml") from None
        for pv_name in pvs:
            with contextlib.suppress(TimeoutError):
                wait_object(self.kube, PVS, pv_name, lambda o: o is None or not _claimed_from(o, name), PV_TIMEOUT)
            pv = self.kube.get_or_none(PVS, pv_name)
            if pv is not None and _claimed_from(pv, name) and \
                    (pv.get("status") or {}).get("phase") in ("Released", "Failed"):
                log.warning("deleting PersistentVolume %s, left Released by the scratch namespace %s", pv_name, name)
                self.kube.delete(PVS, pv_name)


def _claimed_from(pv: Obj, namespace: str) -> bool:
    return ((pv.get("spec") or {}).get("claimRef") or {}).get("namespace") == namespace
