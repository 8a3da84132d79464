"""``jdr serve`` installed on the test control plane exactly as cronjobs/README.md ("Self-service restores")
tells an operator: the z2jh values that register the service (taken from the README's yaml blocks), the
Secret ``jdr-serve-secrets`` with the keys of the README's ``kubectl create secret`` line, and
cronjobs/serve/ (Deployment included) beside the base's ``jdr-config`` through a kustomize overlay.

What the overlay changes is what an operator's overlay would: the namespace, the repository and the hub's
API address in the ConfigMaps; and, because every pod of the test cluster shares the host's network, the
address the pod listens on (127.0.0.1 and a free port, instead of 0.0.0.0:8080); and the test node runs
no images, so the container's ``command`` is the image's ENTRYPOINT (the Dockerfile's ``["jdr"]``).
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.z2jh import merge_values
from tests.fixtures.hub_server import ServeHub
from tests.k8s.kustomize import ROOT, kustomize_build, server_side_apply

README = ROOT / "cronjobs" / "README.md"
SECTION = "## Self-service restores"


def readme_hub_values() -> dict[str, Any]:
    """The ``hub:`` values of every yaml block of cronjobs/README.md (section 1's and the self-service
    one), merged in order as Helm merges values files; each ``apiToken`` placeholder replaced by a token of
    its own, the one thing the operator is told to fill in."""
    blocks = [yaml.safe_load(code) for code in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    hubs = [b["hub"] for b in blocks if isinstance(b, dict) and set(b) == {"hub"}]
    assert len(hubs) == 2, f"expected section 1's and the self-service hub values, found {len(hubs)}"
    values: dict[str, Any] = reduce(merge_values, hubs, {})
    for service in values["services"].values():  # placeholders, as documented: one token each
        assert service["apiToken"].startswith("<"), values
        service["apiToken"] = secrets.token_hex(32)  # the hub wants distinct prefixes too
    return values


def readme_serve_secret() -> tuple[str, list[str]]:
    """Name and keys of the Secret the README's ``kubectl create secret generic`` line of its self-service
    section makes."""
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.find("\n## ", len(SECTION))]
    sh = re.search(r"```sh\n(.*?)```", section, re.S)
    assert sh, "no shell block in the self-service section"
    name = re.search(r"create secret generic (\S+)", sh[1])
    assert name, sh[1]
    return name[1], re.findall(r"--from-literal=([A-Za-z_][A-Za-z0-9_]*)=", sh[1])


def create_secret(k8s_cluster: Any, namespace: str, name: str, data: dict[str, str]) -> None:
    k8s_cluster.core.create_namespaced_secret(namespace, {
        "metadata": {"name": name}, "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def serve_overlay(tmp_path: Path, namespace: str, *, repo_url: str, endpoint: str, hub_api_url: str,
                  port: int) -> Path:
    """An overlay of the base and cronjobs/serve/ (copied, as a checkout would hold them)."""
    shutil.copytree(ROOT / "cronjobs", tmp_path / "cronjobs")
    overlay = tmp_path / "overlays" / "serve"
    overlay.mkdir(parents=True)
    kustomization = {
        "namespace": namespace,
        "resources": ["../../cronjobs", "../../cronjobs/serve"],
        "patches": [
            {"target": {"kind": "ConfigMap", "name": "jdr-config"}, "patch": yaml.safe_dump([
                {"op": "replace", "path": "/data/JDR_REPOSITORY_URL", "value": repo_url},
                {"op": "add", "path": "/data/JDR_REPOSITORY_ENDPOINT_URL", "value": endpoint},
                {"op": "replace", "path": "/data/JDR_HUB_API_URL", "value": hub_api_url}])},
            {"target": {"kind": "ConfigMap", "name": "jdr-serve-config"}, "patch": yaml.safe_dump([
                {"op": "replace", "path": "/data/JUPYTERHUB_API_URL", "value": hub_api_url}])},
            {"target": {"kind": "Deployment", "name": "jdr-serve"}, "patch": yaml.safe_dump([
                {"op": "add", "path": "/spec/template/spec/containers/0/command", "value": ["jdr"]},
                {"op": "replace", "path": "/spec/template/spec/containers/0/args",
                 "value": ["serve", "--ip", "127.0.0.1", "--port", str(port)]},
                {"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/containerPort",
                 "value": port}])},
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def install_serve_pod(k8s_cluster: Any, namespace: str, tmp_path: Path, **overlay: Any) -> list[dict[str, Any]]:
    """Build the overlay and apply server-side what the self-service install adds: everything of
    cronjobs/serve/ and the base's ``jdr-config`` (the base's CronJobs and RBAC are the backup's, not
    needed here). Returns the applied documents."""
    docs = kustomize_build(serve_overlay(tmp_path, namespace, **overlay))
    serve = {(d["kind"], d["metadata"]["name"]) for d in kustomize_build(ROOT / "cronjobs" / "serve")}
    keep = [d for d in docs if (d["kind"], d["metadata"]["name"]) in serve | {("ConfigMap", "jdr-config")}]
    assert len(keep) == len(serve) + 1, [(d["kind"], d["metadata"]["name"]) for d in keep]
    server_side_apply(k8s_cluster.api, keep)
    return keep


@dataclass
class PodService:
    """The serve pod behind a front proxy playing z2jh's proxy (``/services/jdr/`` to the pod, the rest to
    the hub): one origin, so the OAuth redirects and cookie paths are the real ones. Logs in as
    tests/fixtures/hub_server.py's ServeHub does, so that tests/serveutil.py's helpers apply."""

    url: str
    service = ServeHub.service
    login = ServeHub.login
    service_session = ServeHub.service_session
