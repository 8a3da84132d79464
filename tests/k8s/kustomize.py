"""The real ``kustomize`` (Go module ``sigs.k8s.io/kustomize/kustomize/v5``), built and cached by
tests/controlplane/build-kustomize.sh, and server-side apply of what it builds (the Python client's
dynamic client, as ``kubectl apply --server-side`` does)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "tests" / "controlplane" / "build-kustomize.sh"


def kustomize_binary() -> str:
    """Path of the kustomize binary (built on first use, then cached)."""
    out = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"building kustomize failed:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kustomize_binary(), "build", str(path)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"kustomize build {path} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def server_side_apply(api_client: Any, docs: list[dict[str, Any]], *, manager: str = "jdr-test",
                      dry_run: bool = False) -> list[tuple[str, str, str]]:
    """Apply every document server-side (field manager ``manager``); returns (kind, namespace, name)."""
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(api_client)
    done = []
    for doc in docs:
        res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        md = doc["metadata"]
        kwargs: dict[str, Any] = {"field_manager": manager, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        if res.namespaced:
            kwargs["namespace"] = md["namespace"]
        dyn.server_side_apply(res, body=doc, name=md["name"], **kwargs)
        done.append((doc["kind"], md.get("namespace", ""), md["name"]))
    return done
