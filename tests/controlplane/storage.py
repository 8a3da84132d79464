"""Simulated CSI storage: a provisioner (external-provisioner + driver) and a snapshotter
(snapshot-controller + csi-snapshotter) for the driver `hostpath.test.jdr`, backed by directories.

The real kube-controller-manager does the binding (persistentvolume-binder), pvc-protection and
pv-protection; this agent only does what the external CSI sidecars and the driver would do:

- provision: a PVC annotated `volume.kubernetes.io/storage-provisioner: hostpath.test.jdr` by the binder
  (StorageClass provisioner = the driver) gets a PV `pvc-<uid>` with a `csi` source whose volumeHandle
  maps to `<root>/volumes/<handle>`; `dataSource`/`dataSourceRef` of kind VolumeSnapshot (copy of the
  snapshot) or PersistentVolumeClaim (clone) is honoured; WaitForFirstConsumer waits for the scheduler's
  `volume.kubernetes.io/selected-node` and pins the PV to that node.
- delete: a Released PV of ours with reclaim policy Delete is deleted along with its directory; Retain
  leaves both.
- snapshot: a VolumeSnapshot whose class has our driver gets a VolumeSnapshotContent and becomes
  readyToUse after `cp -a` of the volume directory to `<root>/snapshots/<handle>`. Pre-provisioned
  contents (source.snapshotHandle) are bound too. Deletion honours deletionPolicy.
- failure injection: annotation `test.jdr/fail: "<message>"` on a PVC makes provisioning fail (an Event
  `ProvisioningFailed`), on a VolumeSnapshot makes it report `status.error`; `test.jdr/never-ready` on a
  VolumeSnapshot leaves it unready forever.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

DRIVER = "hostpath.test.jdr"
STORAGE_CLASS = "jdr-test"
STORAGE_CLASS_WFFC = "jdr-test-wffc"
SNAPSHOT_CLASS = "jdr-test-snapclass"
SNAP_GROUP, SNAP_VERSION = "snapshot.storage.k8s.io", "v1"
FAIL_ANN = "test.jdr/fail"
NEVER_READY_ANN = "test.jdr/never-ready"
PV_FINALIZER = "external-provisioner.volume.kubernetes.io/finalizer"
VS_BOUND_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
VSC_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
PROVISIONER_ANNS = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")
SELECTED_NODE = "volume.kubernetes.io/selected-node"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_quantity(q: str | int) -> int:
    if isinstance(q, int):
        return q
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
    for u in sorted(units, key=len, reverse=True):
        if q.endswith(u):
            return int(float(q[: -len(u)]) * units[u])
    if q.endswith("m"):
        return int(float(q[:-1]) / 1000)
    return int(float(q))


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a directory's contents preserving ownership, modes, times, links (cp -a)."""
    dst.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["cp", "-a", f"{src}/.", f"{dst}/"], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"cp -a {src} {dst}: {r.stderr.strip()}")


class StorageAgent:
    driver = DRIVER

    def __init__(self, api_client: client.ApiClient, root: Path):
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.root = root
        (root / "volumes").mkdir(parents=True, exist_ok=True)
        (root / "snapshots").mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self._failed_events: set[str] = set()

    # -- paths ---------------------------------------------------------------------------------------
    def handle_dir(self, handle: str) -> Path:
        return self.root / "volumes" / handle

    def snapshot_dir(self, handle: str) -> Path:
        return self.root / "snapshots" / handle

    def pvc_dir(self, namespace: str, name: str) -> Path:
        """Host directory behind a bound PVC of our driver."""
        pvc = self.core.read_namespaced_persistent_volume_claim(name, namespace)
        if not pvc.spec.volume_name:
            raise LookupError(f"PVC {namespace}/{name} is not bound")
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        return self.pv_dir(pv)

    def pv_dir(self, pv) -> Path:
        if pv.spec.csi is None or pv.spec.csi.driver != DRIVER:
            raise LookupError(f"PV {pv.metadata.name} is not backed by {DRIVER}")
        return self.handle_dir(pv.spec.csi.volume_handle)

    # -- install -------------------------------------------------------------------------------------
    def install(self) -> None:
        """CSIDriver, StorageClasses and the VolumeSnapshotClass (CRDs must be installed)."""

        def create(fn, *args):
            try:
                fn(*args)
            except ApiException as e:
                if e.status != 409:
                    raise

        create(self.storage.create_csi_driver, {
            "apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": DRIVER},
            "spec": {"attachRequired": False, "podInfoOnMount": False, "fsGroupPolicy": "File",
                     "volumeLifecycleModes": ["Persistent"]}})
        for name, mode, default in ((STORAGE_CLASS, "Immediate", True),
                                    (STORAGE_CLASS_WFFC, "WaitForFirstConsumer", False)):
            create(self.storage.create_storage_class, {
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": name, "annotations": {
                    "storageclass.kubernetes.io/is-default-class": "true" if default else "false"}},
                "provisioner": DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": mode,
                "allowVolumeExpansion": True})
        create(self.custom.create_cluster_custom_object, SNAP_GROUP, SNAP_VERSION, "volumesnapshotclasses", {
            "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}", "kind": "VolumeSnapshotClass",
            "metadata": {"name": SNAPSHOT_CLASS,
                         "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": DRIVER, "deletionPolicy": "Delete"})

    # -- loops ---------------------------------------------------------------------------------------
    def start(self) -> StorageAgent:
        self._threads = [
            threading.Thread(target=self._loop, name="storage-agent", daemon=True),
            threading.Thread(target=self._watch, args=(self.core.list_persistent_volume_claim_for_all_namespaces,),
                             name="storage-watch-pvc", daemon=True),
            threading.Thread(target=self._watch, args=(self.core.list_persistent_volume,),
                             name="storage-watch-pv", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if not t.name.startswith("storage-watch"):  # watchers are daemons blocked in a stream
                t.join(timeout=5)

    def _err(self, msg: str) -> None:
        self.errors.append(msg)
        del self.errors[:-50]
        print(f"[storage-agent] {msg}", file=sys.stderr)

    def _watch(self, fn) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for _ in w.stream(fn, timeout_seconds=30, _request_timeout=40):
                    self._wake.set()
                    if self._stop.is_set():
                        break
            except Exception:
                self._stop.wait(1)
            finally:
                w.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stop.is_set():
                break
            for step in (self.sync_pvcs, self.sync_pvs, self.sync_snapshots, self.sync_contents):
                try:
                    step()
                except Exception:
                    self._err(f"{step.__name__}:\n{traceback.format_exc()}")

    # -- provisioning --------------------------------------------------------------------------------
    def _event(self, obj_kind: str, obj, reason: str, message: str, type_: str = "Warning") -> None:
        md = obj.metadata if hasattr(obj, "metadata") and not isinstance(obj, dict) else None
        name = md.name if md else obj["metadata"]["name"]
        ns = md.namespace if md else obj["metadata"]["namespace"]
        uid = md.uid if md else obj["metadata"]["uid"]
        key = f"{uid}/{reason}/{message}"
        if key in self._failed_events:
            return
        self._failed_events.add(key)
        api_version = "v1" if obj_kind == "PersistentVolumeClaim" else f"{SNAP_GROUP}/{SNAP_VERSION}"
        try:
            self.core.create_namespaced_event(ns, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{name}.{uuid.uuid4().hex[:12]}", "namespace": ns},
                "involvedObject": {"kind": obj_kind, "name": name, "namespace": ns, "uid": uid,
                                   "apiVersion": api_version},
                "reason": reason, "message": message, "type": type_,
                "source": {"component": f"{DRIVER}_jdr-test-storage-agent"},
                "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1})
        except ApiException as e:
            self._err(f"event: {e.status} {e.reason}")

    def sync_pvcs(self) -> None:
        pvcs = self.core.list_persistent_volume_claim_for_all_namespaces().items
        for pvc in pvcs:
            ann = pvc.metadata.annotations or {}
            if not any(ann.get(a) == DRIVER for a in PROVISIONER_ANNS):
                continue
            if pvc.spec.volume_name or (pvc.status and pvc.status.phase != "Pending"):
                continue
            if pvc.metadata.deletion_timestamp is not None:
                continue
            try:
                self._provision(pvc)
            except _Retry:
                pass

    def _provision(self, pvc) -> None:
        ns, name, uid = pvc.metadata.namespace, pvc.metadata.name, pvc.metadata.uid
        ann = pvc.metadata.annotations or {}
        pv_name = f"pvc-{uid}"
        try:
            self.core.read_persistent_volume(pv_name)
            return  # already provisioned; the binder will finish binding
        except ApiException as e:
            if e.status != 404:
                raise
        if FAIL_ANN in ann:
            self._event("PersistentVolumeClaim", pvc, "ProvisioningFailed",
                        f"failed to provision volume with StorageClass "
                        f"\"{pvc.spec.storage_class_name}\": {ann[FAIL_ANN]}")
            raise _Retry()
        sc = self.storage.read_storage_class(pvc.spec.storage_class_name) if pvc.spec.storage_class_name else None
        node = ann.get(SELECTED_NODE)
        if sc is not None and sc.volume_binding_mode == "WaitForFirstConsumer" and not node:
            raise _Retry()
        handle = f"vol-{uid}"
        d = self.handle_dir(handle)
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o755)
        tmp.chmod(0o755)
        req = parse_quantity((pvc.spec.resources.requests or {}).get("storage", "1Gi"))
        src = pvc.spec.data_source_ref or pvc.spec.data_source
        try:
            if src is not None:
                self._populate(pvc, src, tmp, req)
        except _Retry:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(d)
        spec = {
            "capacity": {"storage": (pvc.spec.resources.requests or {}).get("storage", "1Gi")},
            "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": (sc.reclaim_policy if sc else None) or "Delete",
            "storageClassName": pvc.spec.storage_class_name or "",
            "volumeMode": pvc.spec.volume_mode or "Filesystem",
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                         "name": name, "uid": uid},
            "csi": {"driver": DRIVER, "volumeHandle": handle, "fsType": "ext4",
                    "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": f"jdr-test-{DRIVER}"}},
        }
        if sc is not None and sc.mount_options:
            spec["mountOptions"] = sc.mount_options
        if node:
            spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
        body = {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER,
                                                               "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                                                               "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""},
                             "finalizers": [PV_FINALIZER]},
                "spec": spec}
        try:
            self.core.create_persistent_volume(body)
        except ApiException as e:
            if e.status != 409:
                shutil.rmtree(d, ignore_errors=True)
                raise
        self._event("PersistentVolumeClaim", pvc, "ProvisioningSucceeded",
                    f"Successfully provisioned volume {pv_name}", "Normal")

    def _populate(self, pvc, src, dst: Path, req: int) -> None:
        ns = pvc.metadata.namespace
        kind = src.kind
        group = src.api_group or ""
        if kind == "VolumeSnapshot" and group == SNAP_GROUP:
            try:
                vs = self.custom.get_namespaced_custom_object(SNAP_GROUP, SNAP_VERSION, ns, "volumesnapshots",
                                                              src.name)
            except ApiException as e:
                if e.status == 404:
                    self._event("PersistentVolumeClaim", pvc, "ProvisioningFailed",
                                f'error getting snapshot {src.name} from api server: volumesnapshots.'
                                f'snapshot.storage.k8s.io "{src.name}" not found')
                    raise _Retry() from None
                raise
            st = vs.get("status") or {}
            if not st.get("readyToUse") or not st.get("boundVolumeSnapshotContentName"):
                self._event("PersistentVolumeClaim", pvc, "ProvisioningFailed",
                            f"snapshot {src.name} is not Ready")
                raise _Retry()
            content = self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents",
                                                            st["boundVolumeSnapshotContentName"])
            handle = (content.get("status") or {}).get("snapshotHandle")
            if not handle or content["spec"]["driver"] != DRIVER:
                raise _Retry()
            restore = parse_quantity(st.get("restoreSize") or 0)
            if restore > req:
                self._event("PersistentVolumeClaim", pvc, "ProvisioningFailed",
                            f"requested volume size {req} is less than the size {restore} for the source snapshot "
                            f"{src.name}")
                raise _Retry()
            copy_tree(self.snapshot_dir(handle), dst)
        elif kind == "PersistentVolumeClaim" and not group:
            copy_tree(self.pvc_dir(ns, src.name), dst)
        else:
            self._event("PersistentVolumeClaim", pvc, "ProvisioningFailed",
                        f"data source {group}/{kind} is not supported by {DRIVER}")
            raise _Retry()

    def sync_pvs(self) -> None:
        for pv in self.core.list_persistent_volume().items:
            ann = pv.metadata.annotations or {}
            if ann.get("pv.kubernetes.io/provisioned-by") != DRIVER:
                continue
            phase = pv.status.phase if pv.status else None
            policy = pv.spec.persistent_volume_reclaim_policy
            deleting = pv.metadata.deletion_timestamp is not None
            if (phase == "Released" and policy == "Delete") or (deleting and policy == "Delete"):
                if pv.spec.csi is not None:
                    shutil.rmtree(self.handle_dir(pv.spec.csi.volume_handle), ignore_errors=True)
                self._remove_pv_finalizer(pv)
                if not deleting:
                    try:
                        self.core.delete_persistent_volume(pv.metadata.name)
                    except ApiException as e:
                        if e.status != 404:
                            raise
            elif deleting:
                # Retain: the volume is left in place (as a real driver would), the object may go
                self._remove_pv_finalizer(pv)

    def _remove_pv_finalizer(self, pv) -> None:
        fins = list(pv.metadata.finalizers or [])
        if PV_FINALIZER in fins:
            fins.remove(PV_FINALIZER)
            try:
                self.core.patch_persistent_volume(pv.metadata.name, [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": pv.metadata.resource_version},
                    {"op": "replace", "path": "/metadata/finalizers", "value": fins}])
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    # -- snapshots -----------------------------------------------------------------------------------
    def _snapclass(self, name: str | None) -> dict | None:
        if name:
            try:
                return self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotclasses",
                                                             name)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
        for c in self.custom.list_cluster_custom_object(SNAP_GROUP, SNAP_VERSION,
                                                        "volumesnapshotclasses")["items"]:
            if (c["metadata"].get("annotations") or {}).get(
                    "snapshot.storage.kubernetes.io/is-default-class") == "true" and c["driver"] == DRIVER:
                return c
        return None

    def _vs_status(self, vs: dict, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            SNAP_GROUP, SNAP_VERSION, vs["metadata"]["namespace"], "volumesnapshots", vs["metadata"]["name"],
            {"status": status})

    def sync_snapshots(self) -> None:
        items = self.custom.list_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshots")["items"]
        for vs in items:
            try:
                self._sync_snapshot(vs)
            except _Retry:
                pass

    def _sync_snapshot(self, vs: dict) -> None:
        md = vs["metadata"]
        ann = md.get("annotations") or {}
        st = vs.get("status") or {}
        spec = vs["spec"]
        cls = self._snapclass(spec.get("volumeSnapshotClassName"))
        if cls is None or cls["driver"] != DRIVER:
            return
        if md.get("deletionTimestamp"):
            self._delete_snapshot(vs, cls)
            return
        if st.get("readyToUse") or st.get("error"):
            return
        if NEVER_READY_ANN in ann:
            if "readyToUse" not in st:
                self._vs_status(vs, {"readyToUse": False})
            return
        if FAIL_ANN in ann:
            self._vs_status(vs, {"readyToUse": False, "error": {"time": _now(), "message": ann[FAIL_ANN]}})
            self._event("VolumeSnapshot", vs, "SnapshotCreationFailed", ann[FAIL_ANN])
            return
        src = spec.get("source") or {}
        ns = md["namespace"]
        content_name = f"snapcontent-{md['uid']}"
        if src.get("volumeSnapshotContentName"):
            self._bind_preprovisioned(vs, src["volumeSnapshotContentName"])
            return
        pvc_name = src.get("persistentVolumeClaimName")
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(pvc_name, ns)
        except ApiException as e:
            if e.status == 404:
                self._vs_status(vs, {"readyToUse": False, "error": {
                    "time": _now(), "message": f'failed to get input parameters to create snapshot {md["name"]}: '
                    f'"the PVC {pvc_name} is not yet bound to a PV, will not attempt to take a snapshot"'}})
                raise _Retry() from None
            raise
        if not pvc.spec.volume_name:
            raise _Retry()
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        if pv.spec.csi is None or pv.spec.csi.driver != DRIVER:
            self._vs_status(vs, {"readyToUse": False, "error": {
                "time": _now(), "message": f"PV {pv.metadata.name} is not a {DRIVER} volume"}})
            return
        self._add_finalizer_vs(vs)
        snap_handle = f"snap-{md['uid']}"
        sdir = self.snapshot_dir(snap_handle)
        if not sdir.exists():
            tmp = sdir.with_name(sdir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            copy_tree(self.handle_dir(pv.spec.csi.volume_handle), tmp)
            tmp.rename(sdir)
        size = parse_quantity((pvc.status.capacity or {}).get("storage", "0")) if pvc.status else 0
        created_ns = time.time_ns()
        content = {
            "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}", "kind": "VolumeSnapshotContent",
            "metadata": {"name": content_name, "finalizers": [VSC_FINALIZER],
                         "annotations": {"snapshot.storage.kubernetes.io/deletion-secret-name": "",
                                         "snapshot.storage.kubernetes.io/deletion-secret-namespace": ""}},
            "spec": {"volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": f"{SNAP_GROUP}/{SNAP_VERSION}",
                                           "name": md["name"], "namespace": ns, "uid": md["uid"]},
                     "source": {"volumeHandle": pv.spec.csi.volume_handle},
                     "driver": DRIVER, "deletionPolicy": cls.get("deletionPolicy", "Delete"),
                     "volumeSnapshotClassName": cls["metadata"]["name"]},
        }
        try:
            self.custom.create_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", content)
        except ApiException as e:
            if e.status != 409:
                raise
        self.custom.patch_cluster_custom_object_status(
            SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", content_name,
            {"status": {"snapshotHandle": snap_handle, "readyToUse": True, "restoreSize": size,
                        "creationTime": created_ns}})
        self._vs_status(vs, {"boundVolumeSnapshotContentName": content_name, "readyToUse": True,
                             "restoreSize": (pvc.status.capacity or {}).get("storage", "0"),
                             "creationTime": _now()})

    def _bind_preprovisioned(self, vs: dict, content_name: str) -> None:
        try:
            c = self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents",
                                                      content_name)
        except ApiException as e:
            if e.status == 404:
                raise _Retry() from None
            raise
        handle = (c["spec"].get("source") or {}).get("snapshotHandle")
        if not handle or c["spec"]["driver"] != DRIVER or not self.snapshot_dir(handle).exists():
            self._vs_status(vs, {"readyToUse": False, "error": {
                "time": _now(), "message": f"snapshot handle {handle!r} not found by {DRIVER}"}})
            return
        size = sum(p.stat().st_size for p in self.snapshot_dir(handle).rglob("*") if p.is_file())
        self._add_finalizer_vs(vs)
        self.custom.patch_cluster_custom_object_status(
            SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", content_name,
            {"status": {"snapshotHandle": handle, "readyToUse": True, "restoreSize": size,
                        "creationTime": time.time_ns()}})
        self._vs_status(vs, {"boundVolumeSnapshotContentName": content_name, "readyToUse": True,
                             "restoreSize": str(size), "creationTime": _now()})

    def _add_finalizer_vs(self, vs: dict) -> None:
        fins = vs["metadata"].get("finalizers") or []
        if VS_BOUND_FINALIZER not in fins:
            self.custom.patch_namespaced_custom_object(
                SNAP_GROUP, SNAP_VERSION, vs["metadata"]["namespace"], "volumesnapshots", vs["metadata"]["name"],
                {"metadata": {"finalizers": [*fins, VS_BOUND_FINALIZER],
                              "resourceVersion": vs["metadata"]["resourceVersion"]}})
            raise _Retry()  # re-read with the new resourceVersion next round

    def _delete_snapshot(self, vs: dict, cls: dict) -> None:
        md = vs["metadata"]
        bound = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        if bound:
            try:
                c = self.custom.get_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", bound)
                if c["spec"].get("deletionPolicy") == "Delete" and not c["metadata"].get("deletionTimestamp"):
                    self.custom.delete_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents",
                                                             bound)
            except ApiException as e:
                if e.status != 404:
                    raise
        fins = [f for f in md.get("finalizers") or [] if not f.startswith("snapshot.storage.kubernetes.io/")]
        if fins != (md.get("finalizers") or []):
            try:
                self.custom.patch_namespaced_custom_object(
                    SNAP_GROUP, SNAP_VERSION, md["namespace"], "volumesnapshots", md["name"],
                    {"metadata": {"finalizers": fins or None, "resourceVersion": md["resourceVersion"]}})
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    def sync_contents(self) -> None:
        items = self.custom.list_cluster_custom_object(SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents")["items"]
        for c in items:
            if c["spec"].get("driver") != DRIVER:
                continue
            md = c["metadata"]
            ref = c["spec"].get("volumeSnapshotRef") or {}
            if md.get("deletionTimestamp"):
                if c["spec"].get("deletionPolicy") == "Delete":
                    h = (c.get("status") or {}).get("snapshotHandle") or \
                        (c["spec"].get("source") or {}).get("snapshotHandle")
                    if h:
                        shutil.rmtree(self.snapshot_dir(h), ignore_errors=True)
                fins = [f for f in md.get("finalizers") or [] if f != VSC_FINALIZER]
                if fins != (md.get("finalizers") or []):
                    try:
                        self.custom.patch_cluster_custom_object(
                            SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", md["name"],
                            {"metadata": {"finalizers": fins or None, "resourceVersion": md["resourceVersion"]}})
                    except ApiException as e:
                        if e.status not in (404, 409):
                            raise
                continue
            # a dynamically created content whose snapshot is gone: follow deletionPolicy
            if ref.get("uid") and (c.get("status") or {}).get("snapshotHandle"):
                try:
                    vs = self.custom.get_namespaced_custom_object(SNAP_GROUP, SNAP_VERSION, ref["namespace"],
                                                                  "volumesnapshots", ref["name"])
                    gone = vs["metadata"]["uid"] != ref["uid"]
                except ApiException as e:
                    if e.status != 404:
                        raise
                    gone = True
                if gone and c["spec"].get("deletionPolicy") == "Delete":
                    try:
                        self.custom.delete_cluster_custom_object(SNAP_GROUP, SNAP_VERSION,
                                                                 "volumesnapshotcontents", md["name"])
                    except ApiException as e:
                        if e.status != 404:
                            raise


class _Retry(Exception):
    pass
