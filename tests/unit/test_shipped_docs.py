"""What the docs show is what ships: the drill RBAC in restore/DRILL.md is cronjobs/drill/rbac.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_drill_rbac_in_the_runbook_is_the_shipped_manifest() -> None:
    text = (ROOT / "restore" / "DRILL.md").read_text()
    block = re.search(r"### RBAC for drills.*?```yaml\n(.*?)```", text, re.S)
    assert block is not None, "restore/DRILL.md lost its RBAC block"
    documented = [d for d in yaml.safe_load_all(block.group(1)) if d]
    shipped = [d for d in yaml.safe_load_all((ROOT / "cronjobs" / "drill" / "rbac.yaml").read_text()) if d]
    assert documented == shipped
    assert {(d["kind"], d["metadata"]["name"]) for d in shipped} == {
        ("Role", "jdr-drill"), ("RoleBinding", "jdr-drill"), ("ClusterRole", "jdr-drill"),
        ("ClusterRoleBinding", "jdr-drill")}
    # nothing cluster-scoped but reading StorageClasses
    cluster = next(d for d in shipped if d["kind"] == "ClusterRole")
    assert cluster["rules"] == [{"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["list"]}]


def test_every_manifest_of_the_base_is_listed_in_its_kustomization() -> None:
    base = ROOT / "cronjobs"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert present == listed
    for sub in ("drill", "copy"):
        listed = set(yaml.safe_load((base / sub / "kustomization.yaml").read_text())["resources"])
        assert {p.name for p in (base / sub).glob("*.yaml")} - {"kustomization.yaml"} == listed, sub
