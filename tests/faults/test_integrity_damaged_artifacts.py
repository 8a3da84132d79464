"""Damaged artifacts are never carried forward (issue 10, item 2), through the real CLI on a sandbox hub,
against ``file://`` and the real SeaweedFS S3 server.

An artifact is damaged behind jdr's back (one byte flipped, deleted, truncated). ``jdr verify`` records
what it finds damaged in the repository (``damage/``) and says what to do next; the next backup, on any
machine, never references a damaged or missing artifact: it reads the volume again and stores a fresh
archive, and the run it commits names only good artifacts. ``backup.full_every`` bounds how long any
archive is referenced at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dr.model import Manifest, run_time
from dr.repository.damage import DAMAGE, damage_key, damaged_keys, load_damage
from dr.repository.store import Store
from tests.fixtures.sandbox import Sandbox, describe

pytestmark = pytest.mark.faults


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox], repo_url: str) -> Sandbox:
    """Small homes: these tests are about which archives a run references, not about their content."""
    return make_sandbox(repo_url)


def flip(store: Store, key: str) -> None:
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0x01
    store.put(key, bytes(data))


def truncate(store: Store, key: str) -> None:
    data = store.get(key)
    store.put(key, data[: len(data) // 2])


DAMAGE_KINDS = {
    "flip": flip,
    "delete": lambda store, key: store.delete(key),
    "truncate": truncate,
}


def item(doc: dict[str, Any], user: str) -> dict[str, Any]:
    found = [v for v in doc["manifest"]["volumes"] if v["user"] == user]
    assert len(found) == 1, doc
    return found[0]


def manifest(sb: Sandbox, run: str) -> Manifest:
    return sb.repo().load_manifest(run)


def assert_names_only_good(sb: Sandbox, run: str) -> None:
    """Every artifact of the run is intact (deep) and none is recorded damaged."""
    m = manifest(sb, run)
    damaged = damaged_keys(sb.store())
    assert not [a.key for a in m.artifacts() if a.key in damaged]
    doc = sb.jdr_json("verify", run, "--deep")
    assert doc["ok"] is True and doc["damaged"] == [], doc


@pytest.mark.parametrize("kind,what", [("flip", "archive"), ("truncate", "index")])
def test_verify_records_damage_and_the_next_backup_reads_the_volume_again(
        sandbox: Sandbox, kind: str, what: str) -> None:
    first = sandbox.jdr_json("backup")
    alice = item(first, "alice")
    bob = item(first, "bob")
    key = alice[what]["key"]
    DAMAGE_KINDS[kind](sandbox.store(), key)

    # verify finds it (deep for the archive, shallow suffices for a checksum), records it, says what to do.
    args = ("verify", "--deep") if what == "archive" else ("verify",)
    doc = sandbox.jdr_json(*args, code=1)
    assert [(d["run"], d["user"], d["key"]) for d in doc["damaged"]] == [(first["run"], "alice", key)], doc
    assert any("jdr backup" in s and "alice" in s for s in doc["next_steps"]), doc
    text = sandbox.run_jdr(*args)
    assert text.returncode == 1 and "next step: run `jdr backup`" in text.stdout, describe(text)
    records = load_damage(sandbox.store())
    assert [(r.key, r.run, r.found_by) for r in records] == [(key, first["run"], " ".join(args))]
    assert sandbox.keys(DAMAGE) == [damage_key(key)]

    second = sandbox.jdr_json("backup")
    alice2 = item(second, "alice")
    assert alice2["reused_from"] is None  # read again, not "unchanged"
    assert alice2["archive"]["run"] == alice2["index"]["run"] == second["run"]
    assert item(second, "bob")["reused_from"] == first["run"]  # the others are still referenced
    assert item(second, "bob")["archive"] == bob["archive"]
    assert_names_only_good(sandbox, second["run"])

    # The fresh archive is referenced again by the run after; the damaged one never is.
    third = sandbox.jdr_json("backup")
    assert item(third, "alice")["reused_from"] == second["run"]
    assert key not in {a.key for a in manifest(sandbox, third["run"]).artifacts()}


@pytest.mark.parametrize("kind,what", [("delete", "index"), ("truncate", "archive")])
def test_a_backup_alone_notices_a_missing_or_shortened_artifact(sandbox: Sandbox, kind: str, what: str) -> None:
    """One stat per reused artifact: no verify needed for what a stat can see. The backup records it."""
    first = sandbox.jdr_json("backup")
    key = item(first, "alice")[what]["key"]
    DAMAGE_KINDS[kind](sandbox.store(), key)

    second = sandbox.jdr_json("backup")
    alice2 = item(second, "alice")
    assert alice2["reused_from"] is None and alice2["archive"]["run"] == second["run"]
    assert_names_only_good(sandbox, second["run"])
    records = load_damage(sandbox.store())
    assert [(r.key, r.found_by) for r in records] == [(key, "backup")]
    assert records[0].problem == ("missing" if kind == "delete" else
                                  f"{item(first, 'alice')[what]['size'] // 2} bytes long, "
                                  f"{item(first, 'alice')[what]['size']} recorded")


def test_verify_clears_records_of_artifacts_found_intact_or_named_by_no_run(sandbox: Sandbox) -> None:
    first = sandbox.jdr_json("backup")
    key = item(first, "bob")["archive"]["key"]
    original = sandbox.store().get(key)
    flip(sandbox.store(), key)
    sandbox.jdr_json("verify", code=1)
    assert damaged_keys(sandbox.store()) == {key}

    sandbox.store().put(key, original)  # the administrator put the original bytes back
    doc = sandbox.jdr_json("verify")
    assert doc["cleared"] == [key] and damaged_keys(sandbox.store()) == frozenset()

    # A record naming an artifact that no run names any more (pruned) goes with a verify of every run.
    sandbox.store().put(damage_key("data/20200101T000000Z-000000/volumes/gone.tar.zst"), b"{}")
    doc = sandbox.jdr_json("verify", first["run"])  # one run: cannot know what other runs name
    assert doc["cleared"] == []
    doc = sandbox.jdr_json("verify")
    assert doc["cleared"] == ["data/20200101T000000Z-000000/volumes/gone.tar.zst"]
    assert sandbox.keys(DAMAGE) == []


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_prune_drops_the_damage_record_with_the_last_run_that_names_it(sandbox: Sandbox) -> None:
    # jdr_repository_damaged_artifacts (alert JdrRepositoryDamaged) counts records: one whose runs are all
    # pruned must go, or the alert would fire forever.
    first = sandbox.jdr_json("backup")
    key = item(first, "bob")["archive"]["key"]
    flip(sandbox.store(), key)
    sandbox.jdr_json("verify", code=1)
    second = sandbox.jdr_json("backup")  # bob's home is read again: the new run does not name the damage
    assert item(second, "bob")["archive"]["key"] != key
    sandbox.write_config(retention={"keep_last": 2})
    sandbox.jdr_json("prune")
    assert damaged_keys(sandbox.store()) == {key}  # the first run, still kept, names it
    sandbox.write_config(retention={"keep_last": 1})
    sandbox.jdr_json("prune")
    assert sandbox.keys(DAMAGE) == [] and sandbox.repo().run_ids() == [second["run"]]


def test_full_every_bounds_how_long_an_archive_is_referenced(sandbox: Sandbox) -> None:
    first = sandbox.jdr_json("backup")
    second = sandbox.jdr_json("backup")  # default 30 days: every unchanged home is referenced
    assert {v["user"]: v["reused_from"] for v in second["manifest"]["volumes"]} == {
        v["user"]: first["run"] for v in first["manifest"]["volumes"]}

    # Counted from the run that wrote the archive (not the run that referenced it last): once the first
    # run is more than 1 s old, nothing it wrote is referenced again.
    while datetime.now(UTC) - run_time(first["run"]) <= timedelta(seconds=1.5):
        time.sleep(0.2)
    third = sandbox.jdr_json("backup", env={"JDR_BACKUP_FULL_EVERY": "1s"})
    for v in third["manifest"]["volumes"]:
        assert v["reused_from"] is None and v["archive"]["run"] == third["run"], v
    assert_names_only_good(sandbox, third["run"])


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_full_every_is_validated_naming_the_key(sandbox: Sandbox) -> None:
    proc = sandbox.run_jdr("backup", env={"JDR_BACKUP_FULL_EVERY": "monthly"})
    assert proc.returncode == 2 and "backup.full_every" in proc.stderr, describe(proc)
    assert sandbox.keys("runs/") == []
    sandbox.write_config(backup={"full_every": "2w"})
    assert sandbox.jdr_json("backup")["status"] == "complete"


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_a_drill_that_meets_a_damaged_archive_records_it_for_the_next_backup(sandbox: Sandbox) -> None:
    """The unattended check: the quarterly drill restores the latest run; what it finds damaged is recorded
    (which artifact exactly: the failed volume's artifacts are checked), so the next backup repairs it."""
    sandbox.write_config(drill={"scratch": str(sandbox.root / "scratch")})
    first = sandbox.jdr_json("backup")
    key = item(first, "bob")["archive"]["key"]
    flip(sandbox.store(), key)
    proc = sandbox.run_jdr("--json", "drill")
    assert proc.returncode == 1, describe(proc)
    assert [(r.key, r.found_by) for r in load_damage(sandbox.store())] == [(key, "drill")]

    second = sandbox.jdr_json("backup")
    assert item(second, "bob")["reused_from"] is None
    assert_names_only_good(sandbox, second["run"])
