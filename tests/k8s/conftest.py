"""Fixtures for jdr on the test control plane: a z2jh namespace, a real S3 bucket, and jdr driven as a user
runs it (the ``jdr`` CLI in a subprocess, with a config file for ``kind: kubernetes``).

``jdr_k8s(ns, **settings)`` returns a :class:`Jdr`: ``.run("backup", …)`` runs the CLI and returns the
completed process (``.json()`` parses ``--json`` output), ``.audit()`` the Kubernetes API calls jdr made
(from ``JDR_KUBE_AUDIT``), ``.deployment()`` an in-process KubernetesDeployment on the same settings.
The mover pods find their S3 credentials in a Secret of the namespace (``mover_env_from_secret``), as in
a real installation.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

VENV_BIN = Path(sys.executable).parent
JDR = str(VENV_BIN / "jdr")


def _make_key() -> str:
    import tempfile

    from dr.crypto.age import generate_identity
    from dr.crypto.keys import write_key_file

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "key.txt"
        write_key_file(path, generate_identity())
        return next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))


TEST_KEY = _make_key()


@dataclass
class Jdr:
    namespace: str
    config: Path
    env: dict[str, str]
    audit_path: Path
    workdir: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None,
            input: str | None = None) -> Result:
        proc = subprocess.run([JDR, "--config", str(self.config), *args], capture_output=True, text=True,
                              timeout=timeout, env={**self.env, **(env or {})}, input=input)
        res = Result(proc.returncode, proc.stdout, proc.stderr, args)
        if check and proc.returncode != 0:
            raise AssertionError(f"jdr {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                                 f"stderr:\n{proc.stderr[-6000:]}")
        return res

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([JDR, "--config", str(self.config), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**self.env, **(env or {})})

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]

    def reset_audit(self) -> None:
        self.audit_path.unlink(missing_ok=True)

    def calls(self) -> Counter[tuple[str, str]]:
        return Counter((a["verb"], a["resource"]) for a in self.audit())

    def load_settings(self):
        from dr.settings import load_settings

        return load_settings(self.config, environ=self.env)

    def deployment(self):
        from dr.deployments.kubernetes.api import Kube
        from dr.deployments.kubernetes.deployment import KubernetesDeployment

        s = self.load_settings()
        kube = Kube.connect(self.env["KUBECONFIG"], self.namespace)
        return KubernetesDeployment(s, kube=kube)

    def repo(self):
        from dr.wiring import open_repository

        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            return open_repository(self.load_settings())
        finally:
            os.environ.clear()
            os.environ.update(old)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    args: tuple[str, ...]

    def json(self) -> Any:
        return json.loads(self.stdout)


def make_settings(namespace: str, repo_url: str, hub_api_url: str | None, **overrides: Any) -> dict[str, Any]:
    from dr.settings import KubernetesSettings

    # movers get only the listed keys of their Secret: the defaults, plus the tests' fault hooks (optional)
    keys = [*KubernetesSettings().mover_secret_keys, "JDR_TEST_PAUSE_AT", "JDR_TEST_CRASH_KEYS"]
    k8s = {"namespace": namespace, "mover_image": "jdr-test", "mover_env_from_secret": "jdr-s3",
           "concurrency": 4, "mover_timeout": 180, "snapshot_timeout": 60, "hub_ready_timeout": 120,
           "pvc_timeout": 60, "mover_secret_keys": keys}
    k8s.update(overrides.pop("kubernetes", {}))
    cfg: dict[str, Any] = {"deployment": {"kind": "kubernetes", "kubernetes": k8s}, "repository": repo_url}
    if hub_api_url:
        cfg["hub_api"] = {"url": hub_api_url, "token_env": "JDR_HUB_TOKEN"}
    cfg.update(overrides)
    return cfg


@pytest.fixture
def jdr_k8s(k8s_cluster, s3_server, s3_bucket, tmp_path):
    """Factory: jdr_k8s(namespace, hub=None, encrypted=False, **settings) -> Jdr (see module doc).

    ``s3_env``: the ``AWS_*`` environment of another S3 server or other credentials (e.g. a role of the
    ``roles`` fixture), for jdr and its movers alike, instead of ``s3_server``'s; give ``repo_url`` with it."""
    made: list[Jdr] = []

    def factory(namespace: str, hub=None, encrypted: bool = False, repo_url: str | None = None,
                kubeconfig: Path | None = None, mover_env: dict[str, str] | None = None,
                s3_env: dict[str, str] | None = None, **overrides: Any) -> Jdr:
        s3 = s3_env or s3_server.env()
        secret = {**s3, **(mover_env or {})}
        if encrypted:
            secret["JDR_TEST_KEY"] = TEST_KEY
            overrides.setdefault("encryption", {"key_env": "JDR_TEST_KEY"})
        body = {"metadata": {"name": "jdr-s3"}, "type": "Opaque",
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()}}
        try:
            k8s_cluster.core.create_namespaced_secret(namespace, body)
        except Exception as e:  # exists already (a second Jdr on the same namespace)
            if getattr(e, "status", None) != 409:
                raise
        cfg = make_settings(namespace, repo_url or s3_bucket, hub.hub_api_url if hub is not None else None,
                            **overrides)
        d = tmp_path / f"jdr-{len(made)}"
        d.mkdir()
        path = d / "jdr.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, **s3, "KUBECONFIG": str(kubeconfig or k8s_cluster.kubeconfig),
               "JDR_KUBE_AUDIT": str(d / "audit.jsonl"), "XDG_CACHE_HOME": str(d / "cache"),
               "JDR_LOG_FORMAT": "text"}
        if hub is not None:
            env["JDR_HUB_TOKEN"] = hub.token
        if encrypted:
            env["JDR_TEST_KEY"] = TEST_KEY
        j = Jdr(namespace=namespace, config=path, env=env, audit_path=d / "audit.jsonl", workdir=d, settings=cfg)
        made.append(j)
        return j

    yield factory


def set_mover_env(k8s_cluster, namespace: str, **env: str | None) -> None:
    """Change what mover pods find in their Secret (``None`` removes a variable)."""
    sec = k8s_cluster.core.read_namespaced_secret("jdr-s3", namespace)
    for k, v in env.items():
        if v is None:
            sec.data.pop(k, None)
        else:
            sec.data[k] = base64.b64encode(v.encode()).decode()
    k8s_cluster.core.replace_namespaced_secret("jdr-s3", namespace, sec)


def jdr_objects(k8s_cluster, namespace: str) -> dict[str, list[str]]:
    """Every object jdr created that is still in the namespace (pods, PVCs, snapshots), by kind."""
    sel = "app.kubernetes.io/managed-by=jdr"
    pods = [p.metadata.name for p in k8s_cluster.core.list_namespaced_pod(namespace, label_selector=sel).items]
    pvcs = [p.metadata.name for p in
            k8s_cluster.core.list_namespaced_persistent_volume_claim(namespace, label_selector=sel).items]
    snaps = [s["metadata"]["name"] for s in k8s_cluster.custom.list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", namespace, "volumesnapshots", label_selector=sel)["items"]]
    return {"pods": pods, "pvcs": pvcs, "snapshots": snaps}
