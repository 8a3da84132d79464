"""The storage layout from z2jh's chart values and jdr's settings; static homes joined with the hub's users."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
import yaml

from dr.deployments.kubernetes.static import homes_of as homes
from dr.deployments.kubernetes.static import map_static, mounted_subpaths, parents
from dr.deployments.kubernetes.storage_layout import (
    FROM_HUB,
    FROM_SETTINGS,
    decide_layout,
    values_from_secret,
)
from dr.errors import UsageError
from dr.hubdb.info import DbInfo, ServerInfo
from dr.settings import KubernetesSettings

STATIC = {"singleuser": {"storage": {"type": "static", "static": {"pvcName": "home-nfs", "subPath": "{username}"},
                                     "extraVolumes": [{"name": "datasets",
                                                       "persistentVolumeClaim": {"claimName": "data-pvc"}},
                                                      {"name": "certs", "secret": {"secretName": "x"}}]}},
          "hub": {"config": {"KubeSpawner": {"slug_scheme": "escape"}}}}


def secret(values: dict) -> dict:
    return {"data": {"values.yaml": base64.b64encode(yaml.safe_dump(values).encode()).decode()}}


def test_static_layout_is_read_from_the_hub_secret() -> None:
    layout = decide_layout(values_from_secret(secret(STATIC)), KubernetesSettings())
    assert (layout.kind, layout.claim, layout.subpath, layout.scheme) == ("static", "home-nfs", "{username}",
                                                                          "escape")
    assert layout.origin["kind"] == FROM_HUB and layout.origin["claim"] == FROM_HUB


def test_settings_override_the_secret_and_say_so() -> None:
    k = KubernetesSettings(home_storage="static", static_subpath="{escaped_username}", slug_scheme="safe",
                           extra_volumes=["datasets", "plain-pvc"])
    layout = decide_layout(values_from_secret(secret(STATIC)), k)
    assert layout.subpath == "{escaped_username}" and layout.scheme == "safe" and layout.claim == "home-nfs"
    assert layout.origin["subpath"] == FROM_SETTINGS and layout.origin["claim"] == FROM_HUB
    assert layout.extra == {"datasets": "data-pvc", "plain-pvc": "plain-pvc"}
    assert layout.describe()["origin"]["kind"] == FROM_SETTINGS


def test_no_values_means_dynamic_unless_configured() -> None:
    assert decide_layout(None, KubernetesSettings()).kind == "dynamic"
    assert values_from_secret({"data": {}}) is None and values_from_secret(None) is None
    layout = decide_layout(None, KubernetesSettings(home_storage="static", static_claim="homes"))
    assert layout.subpath == "{username}" and layout.scheme == "safe"


@pytest.mark.parametrize("values,k,words", [
    ({"singleuser": {"storage": {"type": "none"}}}, KubernetesSettings(), "singleuser.storage.type: none"),
    ({"singleuser": {"storage": {"type": "weird"}}}, KubernetesSettings(), "singleuser.storage.type: 'weird'"),
    (None, KubernetesSettings(home_storage="static"), "deployment.kubernetes.static_claim"),
    (STATIC, KubernetesSettings(static_subpath="{pod_name}"), "deployment.kubernetes.static_subpath"),
    (STATIC, KubernetesSettings(extra_volumes=["certs"]), "deployment.kubernetes.extra_volumes"),
    (STATIC, KubernetesSettings(slug_scheme="weird"), "deployment.kubernetes.slug_scheme"),
])
def test_layouts_jdr_cannot_back_up_are_refused_naming_the_setting(values, k, words) -> None:
    with pytest.raises(UsageError) as e:
        decide_layout(values, k)
    assert e.value.exit_code == 2 and words in str(e.value)


def db() -> DbInfo:
    t = datetime(2026, 1, 2, tzinfo=UTC)
    return DbInfo(revision="x", integrity="ok", size=1, users=["alice", "bob", "Émile", "carol"],
                  servers=[ServerInfo("alice", "", running=True, last_activity=t),
                           ServerInfo("bob", ""), ServerInfo("bob", "analysis", last_activity=t)])


PVC = {"metadata": {"name": "home-nfs", "uid": "u1"}, "spec": {"accessModes": ["ReadWriteMany"]}}


def test_static_homes_orphans_links_and_missing_homes() -> None:
    layout = decide_layout(None, KubernetesSettings(home_storage="static", static_claim="home-nfs",
                                                    slug_scheme="escape"))
    h = homes(layout, db())
    assert h == {"alice": ("alice", ""), "bob": ("bob", ""), "-c3-89mile": ("Émile", ""), "carol": ("carol", "")}
    assert parents(h) == ["."]
    listing = {".": {"alice": "dir", "bob": "dir", "-c3-89mile": "dir", "carol": "link", "olduser": "dir",
                     "lost+found": "dir", ".snapshot": "dir", "notes.txt": "other"}}
    m = map_static(layout, PVC, db(), listing, running=set())
    by_sub = {v.source["subPath"]: v for v in m.volumes}
    assert set(by_sub) == {"alice", "bob", "-c3-89mile", "olduser"}
    assert by_sub["olduser"].user is None and by_sub["alice"].running
    # bob's two servers share one directory: one item, the default server's, with the named server's activity
    assert by_sub["bob"].server == "" and by_sub["bob"].last_activity is not None
    assert m.users_without_volume == ["carol"]
    assert any("carol" in w and "symlink" in w for w in m.warnings)
    assert any("olduser" in w and "orphan" in w for w in m.warnings)
    assert len({v.key for v in m.volumes}) == len(m.volumes)


def test_nested_template_lists_its_parent_directory() -> None:
    layout = decide_layout(None, KubernetesSettings(home_storage="static", static_claim="c",
                                                    static_subpath="homes/{username}"))
    assert parents(homes(layout, db())) == ["homes"]


def test_running_homes_come_from_pods_mounting_the_subpath() -> None:
    pod = {"metadata": {"name": "jupyter-bob"}, "status": {"phase": "Running"},
           "spec": {"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-nfs"}}],
                    "containers": [{"volumeMounts": [{"name": "home", "subPath": "bob"}]}]}}
    mover = {**pod, "metadata": {"name": "jdr-x", "labels": {"app.kubernetes.io/managed-by": "jdr"}}}
    assert mounted_subpaths([pod, mover], "home-nfs") == {"bob": ["jupyter-bob"]}
    assert mounted_subpaths([pod], "other") == {}
