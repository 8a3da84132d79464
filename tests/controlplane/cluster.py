"""Start and stop the real control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Binaries come from tests/controlplane/build.sh (cached under ~/.cache/jdr-controlplane/<version>/).
Everything binds to 127.0.0.1 on free ports; certificates are generated per start.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from .pki import PKI
from .procs import Proc, free_port, tail, wait_until

K8S_VERSION = os.environ.get("JDR_K8S_VERSION", "v1.33.13")
HERE = Path(__file__).resolve().parent


def cache_dir(version: str = K8S_VERSION) -> Path:
    root = Path(os.environ.get("JDR_CONTROLPLANE_CACHE", Path.home() / ".cache" / "jdr-controlplane"))
    return root / version


class ControlPlaneError(RuntimeError):
    pass


def ensure_built(version: str = K8S_VERSION) -> Path:
    """Return the cache dir holding bin/ and crds/; build it (slow, once) if missing."""
    d = cache_dir(version)
    if (d / ".complete").exists():
        return d
    if os.environ.get("JDR_CONTROLPLANE_NO_BUILD"):
        raise ControlPlaneError(f"control plane binaries missing in {d}; run tests/controlplane/build.sh")
    import subprocess

    env = dict(os.environ, JDR_K8S_VERSION=version)
    r = subprocess.run(["bash", str(HERE / "build.sh")], env=env)
    if r.returncode != 0 or not (d / ".complete").exists():
        raise ControlPlaneError(f"tests/controlplane/build.sh failed (exit {r.returncode})")
    return d


def _write_kubeconfig(path: Path, server: str, ca: Path, user: dict, name: str = "jdr-test") -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "user"}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


class ControlPlane:
    """The real Kubernetes components, as processes."""

    def __init__(self, workdir: Path | None = None, version: str = K8S_VERSION):
        self.version = version
        self.home = ensure_built(version)
        self.bin = self.home / "bin"
        self.crd_dir = self.home / "crds"
        base = os.environ.get("JDR_CONTROLPLANE_TMP")  # default: the system temp dir (never /dev)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="jdr-cp-", dir=base))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self.port = 0
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._own_workdir = workdir is None

    # -- start -------------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> ControlPlane:
        t0 = time.monotonic()
        try:
            self._pki()
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._start_controller_manager(timeout)
            self._start_scheduler(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _pki(self) -> None:
        pki = self.pki = PKI(self.workdir / "pki")
        self.ca = pki.ca_crt
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.apiserver_crt, self.apiserver_key = pki.issue(
            "apiserver", "kube-apiserver", server=True,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"],
            ips=["127.0.0.1", "10.96.0.1"],
        )
        self.sa_key, self.sa_pub = pki.service_account_keys()
        self.apiserver_kubelet_crt, self.apiserver_kubelet_key = pki.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["kubeadm:cluster-admins"], client=True)
        admin_crt, admin_key = pki.issue("admin", "jdr-test-admin", ["system:masters"], client=True)
        _write_kubeconfig(self.kubeconfig, self.server, self.ca,
                          {"client-certificate": str(admin_crt), "client-key": str(admin_key)})
        kcm_crt, kcm_key = pki.issue("kcm", "system:kube-controller-manager", client=True)
        self.kcm_kubeconfig = _write_kubeconfig(
            self.workdir / "kcm.kubeconfig", self.server, self.ca,
            {"client-certificate": str(kcm_crt), "client-key": str(kcm_key)})
        sch_crt, sch_key = pki.issue("scheduler", "system:kube-scheduler", client=True)
        self.scheduler_kubeconfig = _write_kubeconfig(
            self.workdir / "scheduler.kubeconfig", self.server, self.ca,
            {"client-certificate": str(sch_crt), "client-key": str(sch_key)})
        self.admin_crt, self.admin_key = admin_crt, admin_key

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        p = Proc(name, argv, self.logdir / f"{name}.log")
        self.procs.append(p)
        return p

    def _wait_healthy(self, proc: Proc, check, timeout: float) -> None:
        def ok():
            if not proc.alive():
                raise ControlPlaneError(
                    f"{proc.name} exited with code {proc.popen.returncode} during start-up; "
                    f"log {proc.log}:\n{tail(proc.log)}")
            return check()

        try:
            wait_until(ok, timeout, f"{proc.name} to become healthy", interval=0.25)
        except TimeoutError as e:
            raise ControlPlaneError(f"{e}; log {proc.log}:\n{tail(proc.log)}") from None

    def _get(self, url: str, *, verify: bool = True, client_cert: bool = True) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.ca)) if verify else ssl._create_unverified_context()
        if client_cert and url.startswith("https"):
            ctx.load_cert_chain(str(self.admin_crt), str(self.admin_key))
        try:
            with urllib.request.urlopen(url, context=ctx if url.startswith("https") else None,
                                        timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _start_etcd(self, timeout: float) -> None:
        self.etcd_port, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer}"
        p = self._spawn("etcd", [
            str(self.bin / "etcd"), "--name=default", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=4294967296",
            "--auto-compaction-retention=1h",
        ])
        self._wait_healthy(
            p, lambda: b'"health":"true"' in self._get(f"{url}/health", client_cert=False)[1], timeout)

    def _start_apiserver(self, timeout: float) -> None:
        d = self.workdir
        p = self._spawn("kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}", "--advertise-address=127.0.0.1",
            f"--cert-dir={d / 'apiserver-certs'}",
            f"--tls-cert-file={self.apiserver_crt}", f"--tls-private-key-file={self.apiserver_key}",
            f"--client-ca-file={self.ca}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.sa_pub}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={self.apiserver_kubelet_crt}",
            f"--kubelet-client-key={self.apiserver_kubelet_key}",
            "--profiling=false",
            "--event-ttl=1h",
            "--v=1",
        ])
        self._wait_healthy(p, lambda: self._get(f"{self.server}/readyz")[0] == 200, timeout)

    def _start_controller_manager(self, timeout: float) -> None:
        port = free_port()
        kc = str(self.kcm_kubeconfig)
        p = self._spawn("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.sa_key}",
            f"--root-ca-file={self.ca}",
            f"--cluster-signing-cert-file={self.ca}", f"--cluster-signing-key-file={self.pki.ca_key_file}",
            "--controllers=*",
            "--cluster-name=jdr-test",
            "--pvclaimbinder-sync-period=2s",
            "--v=1",
        ])
        self._wait_healthy(
            p, lambda: self._get(f"https://127.0.0.1:{port}/healthz", verify=False, client_cert=False)[0]
            == 200, timeout)

    def _start_scheduler(self, timeout: float) -> None:
        port = free_port()
        kc = str(self.scheduler_kubeconfig)
        p = self._spawn("kube-scheduler", [
            str(self.bin / "kube-scheduler"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--v=1",
        ])
        self._wait_healthy(
            p, lambda: self._get(f"https://127.0.0.1:{port}/healthz", verify=False, client_cert=False)[0]
            == 200, timeout)

    # -- info ----------------------------------------------------------------------------------------
    def version_info(self) -> dict:
        return json.loads(self._get(f"{self.server}/version")[1])

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise ControlPlaneError(
                    f"{p.name} died (exit {p.popen.returncode}); log {p.log}:\n{tail(p.log)}")

    # -- stop ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                # kube-apiserver drains open watches for a long time on SIGTERM; nothing here needs that
                p.stop(timeout=2.0 if p.name == "kube-apiserver" else 10.0)
            except Exception:
                pass
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir and not os.environ.get("JDR_CONTROLPLANE_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
