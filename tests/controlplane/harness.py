"""The whole test cluster: real control plane + VolumeSnapshot CRDs + storage agent + node agents."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .cluster import ControlPlane, ControlPlaneError
from .nodeagent import NodeAgent
from .procs import wait_until
from .storage import SNAPSHOT_CLASS, STORAGE_CLASS, STORAGE_CLASS_WFFC, StorageAgent

NODES = ("node-a", "node-b")


class KubeCluster:
    """A running test cluster. Attributes:

    kubeconfig (Path, admin: group system:masters), server (https URL), ca_file (Path), port (int),
    api (admin kubernetes.client.ApiClient), core/apps/batch/rbac/storage_api/custom (admin API objects),
    nodes (names), storage_class / storage_class_wffc / snapshot_class / csi_driver (names),
    storage (StorageAgent), node_agents ({name: NodeAgent}), version (e.g. "v1.33.13").
    """

    def __init__(self, nodes=NODES, workdir: Path | None = None, storage_root: Path | None = None):
        self.cp = ControlPlane(workdir)
        self.node_names = list(nodes)
        self._storage_root = storage_root
        self.node_agents: dict[str, NodeAgent] = {}
        self.storage: StorageAgent | None = None
        self._api_clients: list[client.ApiClient] = []

    # -- start / stop -------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> KubeCluster:
        t0 = time.monotonic()
        try:
            self.cp.start(timeout=timeout)
            self.api = self.new_admin_client()
            self.core = client.CoreV1Api(self.api)
            self.apps = client.AppsV1Api(self.api)
            self.batch = client.BatchV1Api(self.api)
            self.rbac = client.RbacAuthorizationV1Api(self.api)
            self.storage_api = client.StorageV1Api(self.api)
            self.custom = client.CustomObjectsApi(self.api)
            self._install_crds(timeout)
            root = self._storage_root or Path(tempfile.mkdtemp(prefix="jdr-cp-storage-"))
            self._own_storage_root = self._storage_root is None
            self.storage_root = root
            self.storage = StorageAgent(self.new_admin_client(), root)
            self.storage.install()
            self.storage.start()
            for n in self.node_names:
                self.node_agents[n] = NodeAgent(self.new_admin_client(), n, self.cp.workdir,
                                                self.cp.port, storage=self.storage).start(self.cp.pki)
            wait_until(self._nodes_ready, 30, "nodes to be Ready")
            wait_until(lambda: self._sa_exists("default", "default"), 60,
                       "the serviceaccount controller to create default/default")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for a in self.node_agents.values():
            try:
                a.stop()
            except Exception as e:
                print(f"node agent stop: {e!r}", file=sys.stderr)
        if self.storage is not None:
            self.storage.stop()
        self.cp.stop()
        for c in self._api_clients:
            try:
                c.close()
            except Exception:
                pass
        self._api_clients.clear()

    def cleanup(self) -> None:
        self.stop()
        if not os.environ.get("JDR_CONTROLPLANE_KEEP") and getattr(self, "_own_storage_root", False):
            shutil.rmtree(self.storage_root, ignore_errors=True)
        self.cp.cleanup()

    # -- properties ---------------------------------------------------------------------------------
    kubeconfig = property(lambda self: self.cp.kubeconfig)
    server = property(lambda self: self.cp.server)
    ca_file = property(lambda self: self.cp.ca)
    port = property(lambda self: self.cp.port)
    version = property(lambda self: self.cp.version)
    nodes = property(lambda self: list(self.node_names))
    storage_class = STORAGE_CLASS
    storage_class_wffc = STORAGE_CLASS_WFFC
    snapshot_class = SNAPSHOT_CLASS
    csi_driver = "hostpath.test.jdr"

    # -- clients ------------------------------------------------------------------------------------
    def new_admin_client(self) -> client.ApiClient:
        c = config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        self._api_clients.append(c)
        return c

    def token_client(self, token: str) -> client.ApiClient:
        """An ApiClient authenticating with a bearer token (e.g. a ServiceAccount's)."""
        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.ca_file)
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        c = client.ApiClient(cfg)
        self._api_clients.append(c)
        return c

    def service_account_token(self, namespace: str, name: str, expiration: int = 3600,
                              audiences: list[str] | None = None) -> str:
        """A token for a ServiceAccount through the TokenRequest API."""
        spec: dict = {"expirationSeconds": expiration}
        if audiences:
            spec["audiences"] = audiences
        tr = self.core.create_namespaced_service_account_token(
            name, namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return tr.status.token

    def write_kubeconfig(self, path: Path, token: str | None = None, namespace: str | None = None) -> Path:
        """Write a kubeconfig: admin (client cert) if token is None, else bearer-token."""
        if token is None:
            cfg = yaml.safe_load(self.cp.kubeconfig.read_text())
        else:
            cfg = {"apiVersion": "v1", "kind": "Config",
                   "clusters": [{"name": "jdr-test", "cluster": {"server": self.server,
                                                                 "certificate-authority": str(self.ca_file)}}],
                   "users": [{"name": "user", "user": {"token": token}}],
                   "contexts": [{"name": "jdr-test", "context": {"cluster": "jdr-test", "user": "user"}}],
                   "current-context": "jdr-test"}
        if namespace:
            cfg["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    # -- helpers ------------------------------------------------------------------------------------
    def pvc_dir(self, namespace: str, name: str) -> Path:
        """Host directory holding the data of a bound PVC (write/read volume data directly)."""
        assert self.storage is not None
        return self.storage.pvc_dir(namespace, name)

    def pv_dir(self, pv_name: str) -> Path:
        assert self.storage is not None
        return self.storage.pv_dir(self.core.read_persistent_volume(pv_name))

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output, read from the node agent (same as read_namespaced_pod_log)."""
        for a in self.node_agents.values():
            p = a.log_path(namespace, pod, container)
            if p is not None:
                try:
                    return p.read_text(errors="replace")
                except OSError:
                    return ""
        raise LookupError(f"no container log for {namespace}/{pod}")

    def create_namespace(self, name: str | None = None, labels: dict | None = None,
                         wait_sa: bool = True) -> str:
        name = name or f"t-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": name, "labels": labels or {}}})
        if wait_sa:
            wait_until(lambda: self._sa_exists(name, "default"), 30, f"serviceaccount {name}/default")
        return name

    def delete_namespace(self, name: str, wait: bool = True, timeout: float = 120) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        if wait:
            def gone():
                try:
                    self.core.read_namespace(name)
                    return False
                except ApiException as e:
                    return e.status == 404
            wait_until(gone, timeout, f"namespace {name} to be deleted")

    def wait_for(self, pred, timeout: float = 60, what: str = "condition", interval: float = 0.2):
        """Poll pred() until truthy; also fails fast if a control-plane process died."""
        def check():
            self.cp.check_alive()
            return pred()
        return wait_until(check, timeout, what, interval)

    def wait_pod_phase(self, namespace: str, name: str, phases=("Running",), timeout: float = 60):
        def ok():
            p = self.core.read_namespaced_pod(name, namespace)
            return p if p.status and p.status.phase in phases else None
        return self.wait_for(ok, timeout, f"pod {namespace}/{name} phase in {phases}")

    def wait_pvc_bound(self, namespace: str, name: str, timeout: float = 60):
        def ok():
            p = self.core.read_namespaced_persistent_volume_claim(name, namespace)
            return p if p.status and p.status.phase == "Bound" else None
        return self.wait_for(ok, timeout, f"pvc {namespace}/{name} to be Bound")

    def wait_gone(self, read, *args, timeout: float = 60, what: str = "object to be deleted"):
        def ok():
            try:
                read(*args)
                return False
            except ApiException as e:
                if e.status == 404:
                    return True
                raise
        return self.wait_for(ok, timeout, what)

    def wait_snapshot_ready(self, namespace: str, name: str, timeout: float = 60) -> dict:
        def ok():
            vs = self.custom.get_namespaced_custom_object("snapshot.storage.k8s.io", "v1", namespace,
                                                          "volumesnapshots", name)
            return vs if (vs.get("status") or {}).get("readyToUse") else None
        return self.wait_for(ok, timeout, f"volumesnapshot {namespace}/{name} to be readyToUse")

    def agent_errors(self) -> list[str]:
        errs = list(self.storage.errors if self.storage else [])
        for a in self.node_agents.values():
            errs += a.errors
        return errs

    # -- internals ----------------------------------------------------------------------------------
    def _install_crds(self, timeout: float) -> None:
        ext = client.ApiextensionsV1Api(self.api)
        names = []
        for f in sorted(self.cp.crd_dir.glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if not doc:
                    continue
                try:
                    ext.create_custom_resource_definition(doc)
                except ApiException as e:
                    if e.status != 409:
                        raise
                names.append(doc["metadata"]["name"])
        if not names:
            raise ControlPlaneError(f"no VolumeSnapshot CRDs found in {self.cp.crd_dir}")

        def established():
            for n in names:
                crd = ext.read_custom_resource_definition(n)
                if not any(c.type == "Established" and c.status == "True"
                           for c in (crd.status.conditions or [])):
                    return False
            # discovery must serve the group before custom objects can be created
            client.CustomObjectsApi(self.api).list_cluster_custom_object(
                "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses")
            return True
        wait_until(established, timeout, "VolumeSnapshot CRDs to be established")

    def _nodes_ready(self) -> bool:
        for n in self.node_names:
            node = self.core.read_node(n)
            if not any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                return False
        return True

    def _sa_exists(self, ns: str, name: str) -> bool:
        try:
            self.core.read_namespaced_service_account(name, ns)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise
