"""Home layouts of a local hub (dr/deployments/home_names.py): TLJH's naming, templates, orphans' pattern."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dr.deployments.home_names import HomeLayout, tljh_system_username
from dr.errors import UsageError

# TLJH's own examples, verbatim from jupyterhub/the-littlest-jupyterhub tests/test_normalize.py
# (test_generate_username): generate_system_username(system name) -> system user name. TLJH's
# UserCreatingSpawner calls it on "jupyter-" + the hub username (tljh/user_creating_spawner.py), and
# tljh/normalize.py keeps names shorter than 26 characters, else cuts to 26 and appends "-" and the
# first 5 hex digits of the SHA-256 of the whole name.
TLJH_EXAMPLES = {
    # Very short
    "jupyter-test": "jupyter-test",
    # Very long
    "jupyter-aelie9sohjeequ9iemeipuimuoshahz4aitugiuteeg4ohioh5yuiha6aei7te5z": "jupyter-aelie9sohjeequ9iem-4b726",
    # 26 characters, just below our cutoff for hashing  (TLJH's comment; the name has 25)
    "jupyter-abcdefghijklmnopq": "jupyter-abcdefghijklmnopq",
    # 27 characters, just above our cutoff for hashing  (TLJH's comment; the name has 26)
    "jupyter-abcdefghijklmnopqr": "jupyter-abcdefghijklmnopqr-e375e",
}


@pytest.mark.parametrize("system_name", sorted(TLJH_EXAMPLES))
def test_tljh_system_username_matches_tljh_examples(system_name: str) -> None:
    hub_user = system_name.removeprefix("jupyter-")
    assert tljh_system_username(hub_user) == TLJH_EXAMPLES[system_name]
    assert len(tljh_system_username(hub_user)) <= 32


def test_tljh_naming_is_cut_at_26_characters_of_the_system_name() -> None:
    assert tljh_system_username("a" * 17) == "jupyter-" + "a" * 17  # 25 characters: kept
    long = tljh_system_username("a" * 18)  # 26 characters: hashed
    assert long.startswith("jupyter-" + "a" * 18 + "-") and len(long) == 32
    # Non-ASCII names are hashed as UTF-8 and cut by characters, as Python does in TLJH.
    assert tljh_system_username("émile.dupont-du-lac") == "jupyter-émile.dupont-du-lac"[:26] + "-" + \
        __import__("hashlib").sha256("jupyter-émile.dupont-du-lac".encode()).hexdigest()[:5]
    # TLJH changes no character: a space stays (useradd refuses it, so such a user never has a home).
    assert tljh_system_username("bob smith") == "jupyter-bob smith"


def test_the_tljh_preset_and_placeholder() -> None:
    layout = HomeLayout.parse("tljh")
    assert layout == HomeLayout.parse("/home/{tljh_username}")
    assert layout.template == "/home/{tljh_username}"
    assert layout.home_of("alice") == Path("/home/jupyter-alice")
    assert layout.home_of("aelie9sohjeequ9iemeipuimuoshahz4aitugiuteeg4ohioh5yuiha6aei7te5z") == \
        Path("/home/jupyter-aelie9sohjeequ9iem-4b726")
    assert layout.matches("/home/jupyter-aelie9sohjeequ9iem-4b726")
    assert layout.matches("/home/jupyter-x")
    assert not layout.matches("/home/ubuntu")  # not a TLJH home
    assert not layout.matches("/home/jupyter-x/work")
    assert not layout.matches("/srv/jupyter-x")


def test_username_templates() -> None:
    layout = HomeLayout.parse("/home/jupyter-{username}")
    assert layout.home_of("alice@example.com") == Path("/home/jupyter-alice@example.com")
    assert layout.matches("/home/jupyter-bob") and not layout.matches("/home/bob")
    assert not layout.matches("/home/jupyter-bob/../etc") and not layout.matches("/etc")
    nested = HomeLayout.parse("/data/{username}/home")
    assert nested.home_of("bob") == Path("/data/bob/home")
    assert nested.matches("/data/bob/home") and not nested.matches("/data/bob")
    for bad in ("bob/../x", "..", ".", ""):
        with pytest.raises(UsageError, match="cannot name a home directory"):
            layout.home_of(bad)
    with pytest.raises(UsageError, match=r"must contain \{username\}"):
        HomeLayout.parse("/home/jupyter")
    with pytest.raises(UsageError, match="exactly one placeholder"):
        HomeLayout.parse("/home/{username}/{username}")
    with pytest.raises(UsageError, match="exactly one placeholder"):
        HomeLayout.parse("/home/{username}-{tljh_username}")


def test_scan_finds_real_directories_of_the_layout(tmp_path: Path) -> None:
    layout = HomeLayout.parse(str(tmp_path / "jupyter-{username}" / "work"))
    for name in ("jupyter-a", "jupyter-b", "other", "jupyter-nowork"):
        (tmp_path / name).mkdir()
    (tmp_path / "jupyter-a" / "work").mkdir()
    (tmp_path / "jupyter-b" / "work").mkdir()
    (tmp_path / "other" / "work").mkdir()
    (tmp_path / "jupyter-file").write_text("")
    os.symlink(tmp_path / "jupyter-a", tmp_path / "jupyter-link")  # never followed
    assert layout.scan() == [tmp_path / "jupyter-a" / "work", tmp_path / "jupyter-b" / "work"]
    assert HomeLayout.parse(str(tmp_path / "missing" / "{username}")).scan() == []


def test_an_orphan_restores_only_into_a_home_of_the_layout(tmp_path: Path) -> None:
    """A manifest is plain JSON in the repository: an orphan item naming any other path (crafted, or from
    another layout) is refused before anything is read or written."""
    from dr.deployments.base import VolumeRestore
    from dr.deployments.local import LocalDeployment
    from dr.errors import DeploymentError
    from dr.model import Artifact, VolumeItem
    from dr.settings import DeploymentSettings

    homes = tmp_path / "home"
    dep = LocalDeployment(DeploymentSettings(hub_db=str(tmp_path / "hub.sqlite"),
                                             homes=str(homes / "jupyter-{username}")))
    art = Artifact(key="data/r/volumes/x.tar.zst", size=1, sha256="0" * 64)
    for path in ("/etc", str(tmp_path / "outside"), str(homes / "jupyter-x" / ".." / ".." / "outside"),
                 str(homes / "ubuntu")):
        item = VolumeItem(key="home-x-00000000", user=None, source={"path": path, "orphan": True},
                          archive=art, index=art)
        with pytest.raises(DeploymentError, match=r"not a home directory of deployment\.homes"):
            dep.restore_volume(VolumeRestore(item=item, target_user=None), repo=None)  # type: ignore[arg-type]
    # a PVC item (Kubernetes) is no home either
    pvc = VolumeItem(key="pvc-x", user=None, source={"pvc": {"name": "claim-x"}}, archive=art, index=art)
    with pytest.raises(DeploymentError, match="restores only homes"):
        dep.restore_volume(VolumeRestore(item=pvc, target_user=None), repo=None)  # type: ignore[arg-type]
    assert not (tmp_path / "outside").exists() and not homes.exists()
