"""Restore plans are pure functions of a manifest: what a restore will do, printed by --dry-run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dr.errors import NotFoundError, UsageError
from dr.model import Artifact, HubItem, Manifest, VolumeItem
from dr.policy.restore_plan import plan_full_restore, plan_hub_restore, plan_user_restore

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
RUN = "20261120T020000Z-abcdef"


def art(name: str) -> Artifact:
    return Artifact(key=f"data/{RUN}/{name}", size=10, sha256="0" * 64, run=RUN)


def vol(user: str, server: str = "", status: str = "ok") -> VolumeItem:
    ok = status == "ok"
    return VolumeItem(key=f"{user}-1234", user=user, server=server, status=status,  # type: ignore[arg-type]
                      archive=art(f"{user}.tar.zst") if ok else None, index=art(f"{user}.idx") if ok else None,
                      files=3, bytes=300, error=None if ok else "home directory missing")


def manifest(*volumes: VolumeItem, hub: HubItem | None = None, users: list[str] | None = None,
             secret: bool = False) -> Manifest:
    if hub is None:
        hub = HubItem(db=art("hub.sqlite.zst"), users=("alice", "bob"),
                      secret=art("secret.json") if secret else None)
    return Manifest(run=RUN, started=T0, finished=T0, status="complete", deployment={"kind": "local"},
                    hub=hub, volumes=volumes, options={"users": users or []})


M = manifest(vol("alice"), vol("bob"), vol("carol", status="failed"), vol("carol", "gpu"))


def test_one_user_whole_volume() -> None:
    plan = plan_user_restore(M, "alice")
    (step,) = plan.volumes
    assert plan.run == RUN and not plan.hub and not plan.hub_secret
    assert step.item.user == "alice" and step.target_user == "alice" and step.paths == () and step.into is None
    assert plan.stop_servers == (("alice", ""),)
    text = "\n".join(plan.lines())
    assert f"from run {RUN}" in text and "stop the server of alice" in text
    assert "the whole volume of alice" in text and "replacing alice's current files" in text
    assert "kept aside" in text
    d = plan.to_dict()
    assert d["volumes"][0]["user"] == "alice" and d["stop_servers"] == [{"user": "alice", "server": ""}]


def test_paths_into_and_as() -> None:
    plan = plan_user_restore(M, "bob", paths=("notebooks/*.ipynb", "data"), into="restored", as_user="alice")
    (step,) = plan.volumes
    assert step.item.user == "bob" and step.target_user == "alice"
    assert step.paths == ("notebooks/*.ipynb", "data") and step.into == "restored"
    assert plan.stop_servers == (("alice", ""),)  # the server whose volume is written to
    text = "\n".join(plan.lines())
    assert "files matching notebooks/*.ipynb, data of bob" in text and "into alice's home under restored/" in text
    over = plan_user_restore(M, "bob", paths=("x",))
    assert "over bob's current files" in "\n".join(over.lines())


def test_named_server() -> None:
    plan = plan_user_restore(M, "carol", server="gpu")
    assert plan.volumes[0].item.server == "gpu" and plan.stop_servers == (("carol", "gpu"),)
    assert "carol:gpu" in "\n".join(plan.lines())


def test_unknown_user_names_the_users_of_the_run() -> None:
    with pytest.raises(NotFoundError, match="no volume of user 'dave'") as e:
        plan_user_restore(M, "dave")
    assert e.value.hint and "alice, bob, carol" in e.value.hint and e.value.exit_code == 2
    with pytest.raises(NotFoundError, match=r"\(server nope\)"):
        plan_user_restore(M, "alice", server="nope")


def test_a_failed_item_cannot_be_restored() -> None:
    with pytest.raises(NotFoundError, match="failed to back up 'carol': home directory missing") as e:
        plan_user_restore(M, "carol")
    assert e.value.hint and "--at" in e.value.hint


def test_an_empty_glob_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty glob"):
        plan_user_restore(M, "alice", paths=("notebooks", " "))


def test_full_restore_skips_failed_items_with_a_warning() -> None:
    plan = plan_full_restore(M, include_secret=True)
    assert plan.hub and not plan.hub_secret  # the run has no secret
    assert [(s.item.user, s.item.server) for s in plan.volumes] == [("alice", ""), ("bob", ""), ("carol", "gpu")]
    assert all(s.target_user == s.item.user for s in plan.volumes)
    (warning,) = plan.warnings
    assert "carol" in warning and "will not be restored" in warning
    text = "\n".join(plan.lines())
    assert "stop the hub, replace its database" in text and "! carol" in text


def test_full_restore_of_a_run_of_some_users_warns() -> None:
    plan = plan_full_restore(manifest(vol("alice"), users=["alice"]), include_secret=False)
    assert plan.warnings == ("this run backed up only some users: alice",)


def test_secret_only_when_asked_and_present() -> None:
    with_secret = manifest(vol("alice"), secret=True)
    assert plan_full_restore(with_secret, include_secret=True).hub_secret
    assert not plan_full_restore(with_secret, include_secret=False).hub_secret
    assert plan_hub_restore(with_secret, include_secret=True).hub_secret
    assert "replace the hub Secret" in "\n".join(plan_hub_restore(with_secret, include_secret=True).lines())
    hub_only = plan_hub_restore(M, include_secret=True)
    assert hub_only.hub and not hub_only.hub_secret and hub_only.volumes == ()


def test_no_usable_hub_database() -> None:
    failed = manifest(vol("alice"), hub=HubItem(db=None, status="failed", error="locked"))
    with pytest.raises(NotFoundError, match="holds no usable hub database"):
        plan_hub_restore(failed, include_secret=False)
    with pytest.raises(NotFoundError, match="holds no hub database"):
        plan_full_restore(failed, include_secret=False)
    # A user's volume can still be restored from that run.
    assert plan_user_restore(failed, "alice").volumes[0].item.user == "alice"
