"""``jdr restore --volume NAME``: the volume of no user is found by the names the operator knows it by."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dr.errors import NotFoundError
from dr.model import Manifest, VolumeItem, volume_key
from dr.policy.volume_restore import plan_volume_restore

T = datetime(2026, 1, 1, tzinfo=UTC)


def manifest() -> Manifest:
    extra = VolumeItem(key=volume_key(None, claim="data-pvc"), user=None,
                       source={"pvc": {"name": "data-pvc"}, "extra_volume": "datasets"})
    orphan = VolumeItem(key=volume_key(None, claim="home-nfs/olduser"), user=None,
                        source={"pvc": {"name": "home-nfs"}, "subPath": "olduser"})
    alice = VolumeItem(key=volume_key("alice"), user="alice", source={"pvc": {"name": "home-nfs"}, "subPath": "alice"})
    broken = VolumeItem(key=volume_key(None, claim="broken"), user=None, status="failed", error="boom",
                        source={"pvc": {"name": "broken"}})
    return Manifest(run="r1", started=T, finished=T, status="complete", deployment={}, hub=None,
                    volumes=(alice, extra, orphan, broken))


@pytest.mark.parametrize("name,key", [("datasets", "data-pvc"), ("data-pvc", "data-pvc"),
                                      ("olduser", "home-nfs/olduser"), ("home-nfs/olduser", "home-nfs/olduser")])
def test_found_by_every_name(name: str, key: str) -> None:
    plan = plan_volume_restore(manifest(), name, paths=("a/*",))
    step = plan.volumes[0]
    assert step.item.key == volume_key(None, claim=key) and step.target_user is None and step.paths == ("a/*",)
    assert plan.stop_servers == ()


def test_users_homes_and_failed_items_are_not_volumes() -> None:
    with pytest.raises(NotFoundError) as home:
        plan_volume_restore(manifest(), "alice")  # a user's home: restored with --user
    assert "--user" in (home.value.hint or "")
    with pytest.raises(NotFoundError, match="did not back up"):
        plan_volume_restore(manifest(), "broken")
    with pytest.raises(NotFoundError) as e:
        plan_volume_restore(manifest(), "nothing")
    assert e.value.exit_code == 2 and "datasets" in (e.value.hint or "")
