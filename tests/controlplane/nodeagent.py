"""Simulated kubelet: registers a Ready Node and runs the Pods scheduled to it as local processes.

Each container runs as `unshare --mount --propagation private -- python podexec.py PLAN` (see podexec.py):
its volumes are bind-mounted at their mountPath in a private mount namespace, as the Pod's
runAsUser/runAsGroup with fsGroup/supplementalGroups as supplementary groups. Images are ignored:
`command` + `args` must be runnable here (resolved on PATH = the venv's bin dir first, then the host's).

Supported: volumes persistentVolumeClaim (the storage agent's directory), emptyDir, secret, configMap,
projected (serviceAccountToken, configMap, secret, downwardAPI), downwardAPI, hostPath, ephemeral;
volumeMounts with readOnly and subPath; env value/valueFrom (secretKeyRef, configMapKeyRef, fieldRef,
resourceFieldRef), envFrom; initContainers (run in order); restartPolicy Never/OnFailure/Always;
terminationMessagePath (a file per container); readiness = running, or an httpGet readinessProbe;
deletion (SIGTERM to the process group, SIGKILL after the grace period, capped, then delete with grace 0);
container logs through the API server (`read_namespaced_pod_log`) via a tiny kubelet log endpoint.
Not supported: exec, attach, port-forward, liveness/startup probes, resource limits.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .procs import free_port, kill_group, set_pdeathsig

HERE = Path(__file__).resolve().parent
PODEXEC = HERE / "podexec.py"
MAX_GRACE = float(os.environ.get("JDR_TEST_MAX_GRACE", "10"))
# RWO volumes in use, shared by the node agents of one process: pv name -> (node, {"ns/pod", ...})
ATTACHED: dict[str, tuple[str, set[str]]] = {}
ATTACH_LOCK = threading.Lock()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _preexec():
    set_pdeathsig(signal.SIGKILL)


def _runtime_dirs() -> list[str]:
    """What a pod's command needs from the host: the venv, the Python it was made from, this checkout.

    A real image carries its programs; here they live on the host, and a pod volume mounted over an
    ancestor (an emptyDir at /tmp, when the checkout is under /tmp) would hide them. podexec binds these
    back, read-only, above the pod's volumes."""
    root = str(Path(__file__).resolve().parents[2])
    dirs = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), root}
    return sorted(d for d in dirs if os.path.isdir(d))


def _expose_map(uid_needed: bool) -> dict[str, list[str]]:
    """Directories on the way to the interpreter/venv that a non-root uid cannot traverse."""
    if not uid_needed:
        return {}
    out: dict[str, list[str]] = {}
    for p in {os.path.realpath(sys.executable), os.path.realpath(sys.prefix),
              os.path.realpath(sys.base_prefix), str(HERE)}:
        parts = Path(p).parts
        for i in range(1, len(parts) - 1):
            d = str(Path(*parts[: i + 1]))
            try:
                mode = os.stat(d).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                out.setdefault(d, [])
                if parts[i + 1] not in out[d]:
                    out[d].append(parts[i + 1])
                break
    return out


class PodNotReady(Exception):
    """A volume or env source is not available yet; the Pod stays Pending (ContainerCreating)."""


class Container:
    def __init__(self, spec, init: bool):
        self.spec = spec
        self.name = spec.name
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.restart_count = 0
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.reason: str | None = None
        self.message: str | None = None
        self.last_state: dict | None = None
        self.next_start = 0.0
        self.log_path: Path | None = None
        self.ready = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    @property
    def terminated(self) -> bool:
        return self.exit_code is not None


class PodRuntime:
    def __init__(self, pod, scratch: Path):
        self.uid = pod.metadata.uid
        self.name = pod.metadata.name
        self.namespace = pod.metadata.namespace
        self.pod = pod
        self.scratch = scratch
        self.volumes: dict[str, Path] = {}
        self.ro_volumes: set[str] = set()
        self.init = [Container(c, True) for c in pod.spec.init_containers or []]
        self.containers = [Container(c, False) for c in pod.spec.containers]
        self.prepared = False
        self.waiting_reason = "ContainerCreating"
        self.waiting_message = ""
        self.start_time = now_iso()
        self.kill_deadline: float | None = None
        self.last_status: dict | None = None
        self.transitions: dict[str, tuple[str, str]] = {}
        self.attached: set[str] = set()

    def all(self) -> list[Container]:
        return self.init + self.containers


class NodeAgent:
    """One simulated node. `start()` registers it and runs the sync loop in a daemon thread."""

    def __init__(self, api_client: client.ApiClient, name: str, workdir: Path, apiserver_port: int,
                 storage=None, labels: dict[str, str] | None = None, venv_bin: str | None = None):
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.name = name
        self.workdir = workdir / f"node-{name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.apiserver_port = apiserver_port
        self.storage = storage
        self.labels = labels or {}
        self.venv_bin = venv_bin or str(Path(sys.executable).parent)
        self.pods: dict[str, PodRuntime] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.RLock()
        self.errors: list[str] = []
        self.kubelet_port = 0
        self._httpd = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, pki=None) -> NodeAgent:
        if pki is not None:
            self._start_log_server(pki)
        self._register()
        for target in (self._sync_loop, self._watch_loop, self._lease_loop):
            t = threading.Thread(target=target, name=f"node-{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            for rt in list(self.pods.values()):
                self._kill(rt, signal.SIGKILL)
        for t in self._threads:
            if not t.name.endswith("_watch_loop"):  # watchers are daemons blocked in a stream
                t.join(timeout=5)
        with self._lock:
            for rt in list(self.pods.values()):
                for c in rt.all():
                    if c.proc is not None:
                        try:
                            c.proc.wait(timeout=5)
                        except subprocess.TimeoutExpired:
                            pass
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # -- node registration and heartbeat ----------------------------------------------------------------
    def _node_status(self) -> dict:
        t = now_iso()
        cond = [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "jdr test node agent is posting ready status"},
        ]
        for c in cond:
            c["lastHeartbeatTime"] = t
            c["lastTransitionTime"] = t
        cap = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "capacity": cap,
            "allocatable": cap,
            "conditions": cond,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port or 10250}},
            "nodeInfo": {
                "machineID": self.name, "systemUUID": self.name, "bootID": self.name,
                "kernelVersion": os.uname().release, "osImage": "jdr test node",
                "containerRuntimeVersion": "jdr-podexec://1", "kubeletVersion": "v1.33.0-jdr",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def _register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": "jdr-test",
            **self.labels,
        }
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}}}
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": self._node_status()})
        self._renew_lease()

    def _renew_lease(self) -> None:
        t = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": t}}
        try:
            self.coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as e:
            if e.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def _lease_loop(self) -> None:
        n = 0
        while not self._stop.wait(5):
            n += 1
            try:
                self._renew_lease()
                if n % 6 == 0:
                    self.core.patch_node_status(self.name, {"status": self._node_status()})
            except Exception as e:
                self._err(f"lease: {e!r}")

    # -- kubelet log endpoint (so the API server's pods/log works) ---------------------------------------
    def _start_log_server(self, pki) -> None:
        crt, key = pki.issue(f"kubelet-{self.name}", f"system:node:{self.name}", ["system:nodes"],
                             server=True, dns=[self.name, "localhost"], ips=["127.0.0.1"])
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                parts = u.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404)
                    return
                _, ns, pod, cname = parts
                q = urllib.parse.parse_qs(u.query)
                data = agent.read_log(ns, pod, cname, previous=q.get("previous", ["false"])[0] == "true")
                if data is None:
                    self.send_error(404, "container not found")
                    return
                if "tailLines" in q:
                    n = int(q["tailLines"][0])
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-n:]) if n > 0 else b""
                if "limitBytes" in q:
                    data = data[: int(q["limitBytes"][0])]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.kubelet_port = free_port()
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.kubelet_port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(crt), str(key))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name=f"kubelet-{self.name}", daemon=True).start()

    def read_log(self, namespace: str, pod: str, container: str, previous: bool = False) -> bytes | None:
        with self._lock:
            for rt in self.pods.values():
                if rt.namespace == namespace and rt.name == pod:
                    for c in rt.all():
                        if c.name == container and c.log_path is not None:
                            path = c.log_path
                            if previous:
                                path = path.with_name(f"{c.name}-{c.restart_count - 1}.log")
                            try:
                                return path.read_bytes()
                            except OSError:
                                return b""
        return None

    def log_path(self, namespace: str, pod: str, container: str | None = None) -> Path | None:
        """Host path of the current log file of a container (first container if None)."""
        with self._lock:
            for rt in self.pods.values():
                if rt.namespace == namespace and rt.name == pod:
                    for c in rt.all():
                        if container in (None, c.name) and not (container is None and c.init):
                            return c.log_path
        return None

    # -- loops -----------------------------------------------------------------------------------------
    def _err(self, msg: str) -> None:
        self.errors.append(msg)
        del self.errors[:-50]
        print(f"[node-agent {self.name}] {msg}", file=sys.stderr)

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for _ in w.stream(self.core.list_pod_for_all_namespaces,
                                  field_selector=f"spec.nodeName={self.name}", timeout_seconds=30,
                                  _request_timeout=40):
                    self._wake.set()
                    if self._stop.is_set():
                        break
            except Exception:
                self._stop.wait(1)
            finally:
                w.stop()

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.sync()
            except Exception:
                self._err("sync failed:\n" + traceback.format_exc())

    # -- sync -------------------------------------------------------------------------------------------
    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}").items
        seen = set()
        with self._lock:
            for pod in pods:
                uid = pod.metadata.uid
                seen.add(uid)
                try:
                    self._sync_pod(pod)
                except Exception:
                    self._err(f"pod {pod.metadata.namespace}/{pod.metadata.name}:\n{traceback.format_exc()}")
            for uid in list(self.pods):
                if uid not in seen:
                    rt = self.pods.pop(uid)
                    self._kill(rt, signal.SIGKILL)
                    self._cleanup(rt)

    def _sync_pod(self, pod) -> None:
        uid = pod.metadata.uid
        rt = self.pods.get(uid)
        phase = pod.status.phase if pod.status else None
        if rt is None:
            if pod.metadata.deletion_timestamp is not None or phase in ("Succeeded", "Failed"):
                if pod.metadata.deletion_timestamp is not None:
                    self._force_delete(pod)
                return
            scratch = self.workdir / f"{pod.metadata.namespace}_{pod.metadata.name}_{uid[:8]}"
            scratch.mkdir(parents=True, exist_ok=True)
            scratch.chmod(0o755)
            rt = self.pods[uid] = PodRuntime(pod, scratch)
        rt.pod = pod

        if pod.metadata.deletion_timestamp is not None:
            self._terminate(rt)
            return

        if not rt.prepared:
            try:
                self._prepare(rt)
                rt.prepared = True
            except (PodNotReady, ApiException) as e:
                if isinstance(e, ApiException) and e.status != 403:
                    raise
                msg = str(e) if isinstance(e, PodNotReady) else f"{e.status} {e.reason}: {e.body}"
                rt.waiting_reason, rt.waiting_message = "ContainerCreating", msg[:1000]
                self._report(rt)
                return
        self._run(rt)
        self._report(rt)

    # -- deletion ---------------------------------------------------------------------------------------
    def _kill(self, rt: PodRuntime, sig: int) -> None:
        for c in rt.all():
            if c.proc is not None and c.proc.poll() is None:
                kill_group(c.proc.pid, sig)

    def _terminate(self, rt: PodRuntime) -> None:
        pod = rt.pod
        if rt.kill_deadline is None:
            grace = pod.metadata.deletion_grace_period_seconds
            grace = MAX_GRACE if grace is None else min(float(grace), MAX_GRACE)
            rt.kill_deadline = time.monotonic() + grace
            self._kill(rt, signal.SIGTERM)
        alive = any(c.proc is not None and c.proc.poll() is None for c in rt.all())
        if alive and time.monotonic() < rt.kill_deadline:
            self._wake.set()
            return
        if alive:
            self._kill(rt, signal.SIGKILL)
        for c in rt.all():
            if c.proc is not None:
                try:
                    c.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self._reap(rt, stopping=True)
        self._detach(rt)
        try:
            self._report(rt, stopping=True)
        except ApiException:
            pass
        self._force_delete(pod)

    def _force_delete(self, pod) -> None:
        try:
            self.core.delete_namespaced_pod(
                pod.metadata.name, pod.metadata.namespace,
                body=client.V1DeleteOptions(grace_period_seconds=0,
                                            preconditions=client.V1Preconditions(uid=pod.metadata.uid)))
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def _cleanup(self, rt: PodRuntime) -> None:
        self._detach(rt)
        shutil.rmtree(rt.scratch / "volumes", ignore_errors=True)
        shutil.rmtree(rt.scratch / "run", ignore_errors=True)

    # -- volumes ----------------------------------------------------------------------------------------
    def _get_secret(self, ns, name, optional=False):
        try:
            return self.core.read_namespaced_secret(name, ns)
        except ApiException as e:
            if e.status == 404:
                if optional:
                    return None
                raise PodNotReady(f'secret "{name}" not found') from None
            raise

    def _get_cm(self, ns, name, optional=False):
        try:
            return self.core.read_namespaced_config_map(name, ns)
        except ApiException as e:
            if e.status == 404:
                if optional:
                    return None
                raise PodNotReady(f'configmap "{name}" not found') from None
            raise

    @staticmethod
    def _write_files(d: Path, files: dict[str, bytes], items, default_mode: int | None) -> None:
        mode = 0o644 if default_mode is None else default_mode
        if items:
            sel = {}
            for it in items:
                if it.key in files:
                    sel[it.path] = (files[it.key], it.mode if it.mode is not None else mode)
        else:
            sel = {k: (v, mode) for k, v in files.items()}
        for rel, (data, m) in sel.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(m)

    def _secret_files(self, ns, name, optional) -> dict[str, bytes]:
        s = self._get_secret(ns, name, optional)
        if s is None:
            return {}
        return {k: base64.b64decode(v) for k, v in (s.data or {}).items()}

    def _cm_files(self, ns, name, optional) -> dict[str, bytes]:
        cm = self._get_cm(ns, name, optional)
        if cm is None:
            return {}
        out = {k: v.encode() for k, v in (cm.data or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return out

    def _field(self, pod, path: str) -> str:
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            d = getattr(pod.metadata, m.group(1)) or {}
            return d.get(m.group(2), "")
        return {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name or self.name,
            "spec.serviceAccountName": pod.spec.service_account_name or "",
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "metadata.labels": "\n".join(f'{k}="{v}"' for k, v in sorted((pod.metadata.labels or {}).items())),
            "metadata.annotations": "\n".join(
                f'{k}="{v}"' for k, v in sorted((pod.metadata.annotations or {}).items())),
        }.get(path, "")

    def _token(self, pod, audience: str | None, expiration: int | None) -> str:
        sa = pod.spec.service_account_name or "default"
        spec = {"expirationSeconds": max(int(expiration or 3600), 3600 * 24),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                   "uid": pod.metadata.uid}}
        if audience:
            spec["audiences"] = [audience]
        try:
            tr = self.core.create_namespaced_service_account_token(
                sa, pod.metadata.namespace, {"apiVersion": "authentication.k8s.io/v1",
                                             "kind": "TokenRequest", "spec": spec})
        except ApiException as e:
            if e.status == 404:
                raise PodNotReady(f'serviceaccount "{sa}" not found') from None
            raise
        return tr.status.token

    def _pvc_dir(self, ns: str, claim: str, rt: PodRuntime | None = None) -> Path:
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim, ns)
        except ApiException as e:
            if e.status == 404:
                raise PodNotReady(f'persistentvolumeclaim "{claim}" not found') from None
            raise
        if pvc.metadata.deletion_timestamp is not None:
            raise PodNotReady(f'persistentvolumeclaim "{claim}" is being deleted')
        if not pvc.spec.volume_name or (pvc.status and pvc.status.phase != "Bound"):
            raise PodNotReady(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        modes = set(pv.spec.access_modes or [])
        if rt is not None and modes and modes <= {"ReadWriteOnce", "ReadWriteOncePod"}:
            # what the attach/detach controller enforces for an RWO volume: one node at a time
            with ATTACH_LOCK:
                holder = ATTACHED.get(pv.metadata.name)
                if holder and holder[0] != self.name and holder[1]:
                    raise PodNotReady(
                        f'Multi-Attach error for volume "{pv.metadata.name}" Volume is already used by pod(s) '
                        f'{", ".join(sorted(holder[1]))} on node {holder[0]}')
                if not holder or holder[0] != self.name:
                    ATTACHED[pv.metadata.name] = (self.name, set())
                ATTACHED[pv.metadata.name][1].add(f"{ns}/{rt.name}")
                rt.attached.add(pv.metadata.name)
        if pv.spec.csi is not None and self.storage is not None and pv.spec.csi.driver == self.storage.driver:
            return self.storage.handle_dir(pv.spec.csi.volume_handle)
        if pv.spec.host_path is not None:
            return Path(pv.spec.host_path.path)
        if pv.spec.local is not None:
            return Path(pv.spec.local.path)
        raise PodNotReady(f"volume {pv.metadata.name} has a source this node cannot mount")

    def _detach(self, rt: PodRuntime) -> None:
        with ATTACH_LOCK:
            for pv in rt.attached:
                holder = ATTACHED.get(pv)
                if holder and holder[0] == self.name:
                    holder[1].discard(f"{rt.namespace}/{rt.name}")
                    if not holder[1]:
                        del ATTACHED[pv]
            rt.attached.clear()

    def _prepare(self, rt: PodRuntime) -> None:
        pod = rt.pod
        ns = pod.metadata.namespace
        vdir = rt.scratch / "volumes"
        vdir.mkdir(exist_ok=True)
        vdir.chmod(0o755)
        sc = pod.spec.security_context
        fs_group = sc.fs_group if sc else None
        for v in pod.spec.volumes or []:
            d = vdir / v.name
            if v.persistent_volume_claim is not None:
                path = self._pvc_dir(ns, v.persistent_volume_claim.claim_name, rt)
                if v.persistent_volume_claim.read_only:
                    rt.ro_volumes.add(v.name)
                if fs_group is not None:
                    self._apply_fs_group(path, fs_group)
                rt.volumes[v.name] = path
            elif v.ephemeral is not None:
                rt.volumes[v.name] = path = self._pvc_dir(ns, f"{pod.metadata.name}-{v.name}", rt)
                if fs_group is not None:
                    self._apply_fs_group(path, fs_group)
            elif v.empty_dir is not None:
                d.mkdir(exist_ok=True)
                d.chmod(0o777)
                if fs_group is not None:
                    self._apply_fs_group(d, fs_group)
                rt.volumes[v.name] = d
            elif v.host_path is not None:
                p = Path(v.host_path.path)
                if v.host_path.type in ("DirectoryOrCreate",) and not p.exists():
                    p.mkdir(parents=True, mode=0o755)
                if v.host_path.type == "FileOrCreate" and not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch(0o644)
                if not p.exists():
                    raise PodNotReady(f"hostPath {p} does not exist")
                rt.volumes[v.name] = p
            elif v.secret is not None:
                d.mkdir(exist_ok=True)
                files = self._secret_files(ns, v.secret.secret_name, bool(v.secret.optional))
                self._write_files(d, files, v.secret.items, v.secret.default_mode)
                rt.volumes[v.name] = d
                rt.ro_volumes.add(v.name)
            elif v.config_map is not None:
                d.mkdir(exist_ok=True)
                files = self._cm_files(ns, v.config_map.name, bool(v.config_map.optional))
                self._write_files(d, files, v.config_map.items, v.config_map.default_mode)
                rt.volumes[v.name] = d
                rt.ro_volumes.add(v.name)
            elif v.downward_api is not None:
                d.mkdir(exist_ok=True)
                files = {it.path: self._field(pod, it.field_ref.field_path).encode()
                         for it in v.downward_api.items or [] if it.field_ref is not None}
                self._write_files(d, files, None, v.downward_api.default_mode)
                rt.volumes[v.name] = d
                rt.ro_volumes.add(v.name)
            elif v.projected is not None:
                d.mkdir(exist_ok=True)
                mode = v.projected.default_mode
                for src in v.projected.sources or []:
                    if src.service_account_token is not None:
                        t = src.service_account_token
                        self._write_files(d, {t.path: self._token(pod, t.audience, t.expiration_seconds)
                                              .encode()}, None, mode)
                    elif src.config_map is not None:
                        files = self._cm_files(ns, src.config_map.name, bool(src.config_map.optional))
                        self._write_files(d, files, src.config_map.items, mode)
                    elif src.secret is not None:
                        files = self._secret_files(ns, src.secret.name, bool(src.secret.optional))
                        self._write_files(d, files, src.secret.items, mode)
                    elif src.downward_api is not None:
                        files = {it.path: self._field(pod, it.field_ref.field_path).encode()
                                 for it in src.downward_api.items or [] if it.field_ref is not None}
                        self._write_files(d, files, None, mode)
                rt.volumes[v.name] = d
                rt.ro_volumes.add(v.name)
            else:
                raise PodNotReady(f"volume {v.name}: this volume type is not supported by the test node")

    @staticmethod
    def _apply_fs_group(path: Path, gid: int) -> None:
        """kubelet's volume ownership management, OnRootMismatch flavour: group-own and setgid the tree."""
        st = path.stat()
        if st.st_gid == gid and st.st_mode & stat.S_ISGID:
            return
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                p = os.path.join(root, name)
                if os.path.islink(p):
                    continue
                s = os.lstat(p)
                os.chown(p, -1, gid)
                m = stat.S_IMODE(s.st_mode) | stat.S_IRGRP | stat.S_IWGRP
                if stat.S_ISDIR(s.st_mode):
                    m |= stat.S_IXGRP | stat.S_ISGID
                os.chmod(p, m)
        os.chown(path, -1, gid)
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o070 | stat.S_ISGID)

    # -- containers ---------------------------------------------------------------------------------
    def _env(self, rt: PodRuntime, c, uid: int | None) -> dict[str, str]:
        pod = rt.pod
        ns = pod.metadata.namespace
        host_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env: dict[str, str] = {
            "PATH": f"{self.venv_bin}:{host_path}",
            "HOSTNAME": pod.metadata.name,
            "HOME": "/root" if not uid else "/",
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.apiserver_port),
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.apiserver_port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{self.apiserver_port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": str(self.apiserver_port),
            "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
        }
        for ef in c.env_from or []:
            prefix = ef.prefix or ""
            if ef.config_map_ref is not None:
                for k, v in self._cm_files(ns, ef.config_map_ref.name, bool(ef.config_map_ref.optional)).items():
                    env[prefix + k] = v.decode()
            if ef.secret_ref is not None:
                for k, v in self._secret_files(ns, ef.secret_ref.name, bool(ef.secret_ref.optional)).items():
                    env[prefix + k] = v.decode()

        def expand(s: str) -> str:
            return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)

        for e in c.env or []:
            if e.value_from is None:
                env[e.name] = expand(e.value or "")
                continue
            vf = e.value_from
            if vf.secret_key_ref is not None:
                r = vf.secret_key_ref
                files = self._secret_files(ns, r.name, bool(r.optional))
                if r.key not in files:
                    if r.optional:
                        continue
                    raise PodNotReady(f'couldn\'t find key {r.key} in Secret {ns}/{r.name}')
                env[e.name] = files[r.key].decode()
            elif vf.config_map_key_ref is not None:
                r = vf.config_map_key_ref
                files = self._cm_files(ns, r.name, bool(r.optional))
                if r.key not in files:
                    if r.optional:
                        continue
                    raise PodNotReady(f'couldn\'t find key {r.key} in ConfigMap {ns}/{r.name}')
                env[e.name] = files[r.key].decode()
            elif vf.field_ref is not None:
                env[e.name] = self._field(pod, vf.field_ref.field_path)
            elif vf.resource_field_ref is not None:
                env[e.name] = "1"
        return env

    def _ids(self, rt: PodRuntime, c) -> tuple[int | None, int | None, list[int]]:
        psc = rt.pod.spec.security_context
        csc = c.security_context
        uid = (csc.run_as_user if csc and csc.run_as_user is not None else
               psc.run_as_user if psc else None)
        gid = (csc.run_as_group if csc and csc.run_as_group is not None else
               psc.run_as_group if psc else None)
        groups: list[int] = []
        if psc is not None:
            if psc.fs_group is not None:
                groups.append(psc.fs_group)
            groups += list(psc.supplemental_groups or [])
        if uid is not None and gid is None:
            gid = 0
        if gid is not None:
            groups.append(gid)
        return uid, gid, groups

    def _start_container(self, rt: PodRuntime, c: Container) -> None:
        spec = c.spec
        argv = list(spec.command or []) + list(spec.args or [])
        run = rt.scratch / "run" / c.name
        run.mkdir(parents=True, exist_ok=True)
        run.chmod(0o755)
        logs = rt.scratch / "logs"
        logs.mkdir(exist_ok=True)
        c.log_path = logs / f"{c.name}-{c.restart_count}.log"
        if not argv:
            self._fail_start(c, "NoCommand",
                             "the test node cannot run images: the container needs a command or args")
            return
        uid, gid, groups = self._ids(rt, spec)
        try:
            env = self._env(rt, spec, uid)
        except PodNotReady as e:
            rt.waiting_reason, rt.waiting_message = "CreateContainerConfigError", str(e)
            return

        def expand(s: str) -> str:
            return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)

        argv = [expand(a) for a in argv]
        tlog = run / "termination-log"
        tlog.write_bytes(b"")
        tlog.chmod(0o666)
        mounts = []
        for vm in spec.volume_mounts or []:
            src = rt.volumes.get(vm.name)
            if src is None:
                self._fail_start(c, "CreateContainerConfigError", f"volume {vm.name} not found")
                return
            if vm.sub_path:
                src = src / vm.sub_path
                if not src.exists():
                    src.mkdir(parents=True, mode=0o755)
            mounts.append({"source": str(src), "target": vm.mount_path,
                           "readonly": bool(vm.read_only) or vm.name in rt.ro_volumes,
                           "file": src.is_file()})
        mounts.append({"source": str(tlog), "target": spec.termination_message_path or "/dev/termination-log",
                       "file": True})
        scratch = run / f"ns{c.restart_count}"
        scratch.mkdir(exist_ok=True)
        plan = {"argv": argv, "env": env, "cwd": spec.working_dir, "uid": uid, "gid": gid,
                "groups": groups, "scratch": str(scratch), "mounts": mounts,
                "expose": _expose_map(bool(uid)), "runtime": _runtime_dirs()}
        plan_path = run / f"plan-{c.restart_count}.json"
        plan_path.write_text(json.dumps(plan))
        plan_path.chmod(0o600)
        logf = open(c.log_path, "ab")
        try:
            c.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", sys.executable, str(PODEXEC),
                 str(plan_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_preexec, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        finally:
            logf.close()
        c.started_at = now_iso()
        c.exit_code = None
        c.finished_at = None
        c.reason = c.message = None
        c.ready = False

    def _fail_start(self, c: Container, reason: str, message: str) -> None:
        c.started_at = c.finished_at = now_iso()
        c.exit_code = 128
        c.reason = reason
        c.message = message

    def _reap(self, rt: PodRuntime, stopping: bool = False) -> None:
        for c in rt.all():
            if c.proc is not None and c.exit_code is None:
                rc = c.proc.poll()
                if rc is None:
                    continue
                c.exit_code = rc if rc >= 0 else 128 - rc
                # the container is gone: like a runtime tearing down its PID namespace, kill what it left
                kill_group(c.proc.pid, signal.SIGKILL)
                c.finished_at = now_iso()
                c.reason = "Completed" if rc == 0 else "Error"
                try:
                    msg = (rt.scratch / "run" / c.name / "termination-log").read_text(errors="replace")
                except OSError:
                    msg = ""
                if not msg and c.spec.termination_message_policy == "FallbackToLogsOnError" and rc != 0:
                    try:
                        msg = "\n".join(c.log_path.read_text(errors="replace").splitlines()[-80:])
                    except OSError:
                        msg = ""
                c.message = msg[-4096:] or None
                c.ready = False

    def _restart_wanted(self, rt: PodRuntime, c: Container) -> bool:
        policy = rt.pod.spec.restart_policy or "Always"
        if c.init and getattr(c.spec, "restart_policy", None) == "Always":
            return True
        if policy == "Always" and not c.init:
            return True
        if policy in ("Always", "OnFailure"):
            return c.exit_code != 0
        return False

    def _run(self, rt: PodRuntime) -> None:
        self._reap(rt)
        # init containers, one after the other
        for c in rt.init:
            if c.proc is None and c.exit_code is None:
                self._start_container(rt, c)
                return
            if c.running:
                return
            if c.exit_code != 0:
                if self._restart_wanted(rt, c):
                    self._maybe_restart(rt, c)
                return
        for c in rt.containers:
            if c.proc is None and c.exit_code is None:
                self._start_container(rt, c)
            elif c.terminated and self._restart_wanted(rt, c):
                self._maybe_restart(rt, c)
        for c in rt.containers:
            if c.running:
                c.ready = self._probe(c)

    def _maybe_restart(self, rt: PodRuntime, c: Container) -> None:
        if c.next_start == 0.0:
            c.next_start = time.monotonic() + min(1.0 * (2 ** min(c.restart_count, 4)), 10.0)
        if time.monotonic() < c.next_start:
            self._wake.set()
            return
        c.last_state = self._state(c)
        c.restart_count += 1
        c.next_start = 0.0
        c.proc = None
        c.exit_code = None
        self._start_container(rt, c)

    def _probe(self, c: Container) -> bool:
        p = c.spec.readiness_probe
        if p is None or p.http_get is None:
            return True
        port = p.http_get.port
        if isinstance(port, str) and not port.isdigit():
            port = next((cp.container_port for cp in c.spec.ports or [] if cp.name == port), None)
            if port is None:
                return False
        scheme = (p.http_get.scheme or "HTTP").lower()
        url = f"{scheme}://127.0.0.1:{int(port)}{p.http_get.path or '/'}"
        try:
            ctx = ssl._create_unverified_context() if scheme == "https" else None
            with urllib.request.urlopen(url, timeout=1, context=ctx) as r:
                return 200 <= r.status < 400
        except Exception:
            return False

    # -- status -------------------------------------------------------------------------------------
    @staticmethod
    def _state(c: Container) -> dict:
        if c.exit_code is not None:
            t = {"exitCode": c.exit_code, "reason": c.reason or "Error", "startedAt": c.started_at,
                 "finishedAt": c.finished_at, "containerID": f"jdr://{id(c):x}-{c.restart_count}"}
            if c.message:
                t["message"] = c.message
            return {"terminated": t}
        if c.proc is not None:
            return {"running": {"startedAt": c.started_at}}
        return {"waiting": {"reason": "PodInitializing" if not c.init else "ContainerCreating"}}

    def _container_status(self, rt: PodRuntime, c: Container) -> dict:
        st = self._state(c)
        if ("waiting" in st and rt.waiting_reason and not rt.prepared) or ("waiting" in st and rt.waiting_reason == "CreateContainerConfigError"):
            st = {"waiting": {"reason": rt.waiting_reason, "message": rt.waiting_message}}
        elif "terminated" in st and c.next_start and self._restart_wanted(rt, c) and not rt.kill_deadline:
            st = {"waiting": {"reason": "CrashLoopBackOff",
                              "message": f"back-off restarting failed container {c.name}"}}
        cs = {"name": c.name, "image": c.spec.image or "", "imageID": "", "ready": bool(c.ready and c.running),
              "restartCount": c.restart_count, "started": c.running, "state": st,
              "lastState": c.last_state or {}}
        if c.proc is not None:
            cs["containerID"] = f"jdr://{rt.uid[:8]}-{c.name}-{c.restart_count}"
        return cs

    def _phase(self, rt: PodRuntime) -> str:
        if not rt.prepared:
            return "Pending"
        for c in rt.init:
            if not c.terminated or c.exit_code != 0:
                if c.terminated and not self._restart_wanted(rt, c):
                    return "Failed"
                return "Pending"
        cs = rt.containers
        if any(c.proc is None and c.exit_code is None for c in cs):
            return "Pending"
        if any(c.running for c in cs):
            return "Running"
        if all(c.terminated for c in cs):
            if any(self._restart_wanted(rt, c) for c in cs) and not rt.kill_deadline:
                return "Running"
            if all(c.exit_code == 0 for c in cs):
                return "Succeeded"
            return "Failed"
        return "Running"

    def _report(self, rt: PodRuntime, stopping: bool = False) -> None:
        phase = self._phase(rt)
        if phase in ("Succeeded", "Failed"):
            self._detach(rt)
        if stopping and phase in ("Running", "Pending"):
            # kubelet reports Failed for a pod whose containers were stopped by deletion (restartPolicy
            # Never) or keeps the last phase; we keep Running->Failed semantics simple: report terminated
            phase = "Failed" if any(c.exit_code not in (0, None) for c in rt.containers) else "Succeeded"
        init_ok = all(c.terminated and c.exit_code == 0 for c in rt.init)
        ready = phase == "Running" and all(c.ready and c.running for c in rt.containers)
        t = now_iso()

        def cond(typ, ok, reason=None):
            d = {"type": typ, "status": "True" if ok else "False", "lastProbeTime": None}
            if reason and not ok:
                d["reason"] = reason
            return d

        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": rt.start_time,
            "conditions": [
                cond("PodReadyToStartContainers", rt.prepared),
                cond("Initialized", init_ok, "ContainersNotInitialized"),
                cond("ContainersReady", ready, "ContainersNotReady"),
                cond("Ready", ready, "ContainersNotReady"),
            ],
            "containerStatuses": [self._container_status(rt, c) for c in rt.containers],
        }
        if rt.init:
            status["initContainerStatuses"] = [self._container_status(rt, c) for c in rt.init]
        if status == rt.last_status:
            return
        body = json.loads(json.dumps(status))
        for c in body["conditions"]:
            old = rt.transitions.get(c["type"])
            if old is None or old[0] != c["status"]:
                rt.transitions[c["type"]] = old = (c["status"], t)
            c["lastTransitionTime"] = old[1]
        try:
            self.core.patch_namespaced_pod_status(rt.name, rt.namespace, {"status": body})
        except ApiException as e:
            if e.status == 404:
                return
            raise
        rt.last_status = status
