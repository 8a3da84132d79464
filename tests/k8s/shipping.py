"""Reading the ``cronjobs/`` kustomize base in tests: built by ``kubectl kustomize`` when kubectl is
installed, else by a small merge of the resources kustomization.yaml lists (images applied)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

CRONJOBS = Path(__file__).resolve().parents[2] / "cronjobs"


def build(base: Path = CRONJOBS) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(base)], capture_output=True, text=True, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i.get('newTag', 'latest')}" for i in kust.get("images", [])}
    docs = []
    for res in kust["resources"]:
        for doc in yaml.safe_load_all((base / res).read_text()):
            if doc:
                docs.append(doc)
    for doc in docs:
        for c in _containers(doc):
            if c.get("image") in images:
                c["image"] = images[c["image"]]
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return list(spec.get("containers", [])) + list(spec.get("initContainers", []))
    return []


def cronjob_args(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """{CronJob name: the jdr arguments of its container} (the image's entrypoint is ``jdr``)."""
    out = {}
    for doc in docs:
        for c in _containers(doc):
            out[doc["metadata"]["name"]] = [*c.get("command", [])[1:], *c.get("args", [])]
    return out


def rules(docs: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) granted by the Role or ClusterRole of the base."""
    granted = set()
    for doc in docs:
        if doc["kind"] != kind:
            continue
        for rule in doc["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        granted.add((g, r, v))
    return granted
