"""The reuse decision (dr/deployments/reuse.py) and verify's next steps, on a real file:// repository.

A previous run's capture of a volume may be referenced again only when it is known good: not recorded
damaged, not older than ``backup.full_every`` (counted from the run that first wrote it), and present at
its recorded size (one stat each). A missing or shortened artifact found by that stat is recorded damaged.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.deployments.base import BackupContext
from dr.deployments.reuse import decide_reuse
from dr.model import Artifact, Manifest, VolumeItem
from dr.operations.verify import Damage, VerifyResult, next_steps
from dr.repository.damage import damaged_keys, load_damage
from dr.repository.file import FileStore
from dr.repository.repository import Repository

OLD_RUN = "20260101T020000Z-aaaaaa"  # wrote the archive
PREV_RUN = "20260120T020000Z-bbbbbb"  # referenced it, unchanged
NOW = datetime(2026, 1, 21, 2, 0, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(FileStore(tmp_path / "repo"), create=True)


def stored(repo: Repository, key: str, body: bytes, run: str = OLD_RUN) -> Artifact:
    with repo.artifact_writer(key, run) as w:
        w.write(body)
    return w.artifact


@pytest.fixture
def prev(repo: Repository) -> VolumeItem:
    archive = stored(repo, f"data/{OLD_RUN}/volumes/alice.tar.zst", b"archive bytes")
    index = stored(repo, f"data/{OLD_RUN}/volumes/alice.index.jsonl.zst", b"index bytes")
    return VolumeItem(key="alice", user="alice", archive=archive, index=index, fingerprint="fp",
                      reused_from=OLD_RUN)


def ctx(repo: Repository, **kw: object) -> BackupContext:
    previous = Manifest(run=PREV_RUN, started=NOW - timedelta(days=1), finished=NOW - timedelta(days=1),
                        status="complete", deployment={"kind": "local"}, hub=None, volumes=())
    fields: dict[str, object] = {"repo": repo, "run": "20260121T020000Z-cccccc", "previous": previous}
    fields.update(kw)
    return BackupContext(**fields)  # type: ignore[arg-type]


def test_a_good_capture_is_reusable(repo: Repository, prev: VolumeItem) -> None:
    assert decide_reuse(ctx(repo, reuse_since=NOW - timedelta(days=30)), prev, "alice").reusable
    assert decide_reuse(ctx(repo), prev, "alice").reusable  # no full_every bound at all
    assert damaged_keys(repo.store) == frozenset()


def test_full_and_failed_and_absent_captures_are_not(repo: Repository, prev: VolumeItem) -> None:
    assert decide_reuse(ctx(repo, full=True), prev).reason == "full backup requested"
    assert not decide_reuse(ctx(repo), None).reusable
    assert not decide_reuse(ctx(repo), replace(prev, status="failed")).reusable
    assert not decide_reuse(ctx(repo), replace(prev, index=None)).reusable


@pytest.mark.parametrize("which", ["archive", "index"])
def test_a_capture_recorded_damaged_is_not_referenced(repo: Repository, prev: VolumeItem, which: str) -> None:
    art = getattr(prev, which)
    decision = decide_reuse(ctx(repo, damaged=frozenset({art.key})), prev, "alice")
    assert (decision.reusable, decision.reason) == (False, "recorded damaged")


def test_full_every_counts_from_the_run_that_wrote_the_archive(repo: Repository, prev: VolumeItem) -> None:
    # Referenced by PREV_RUN a day ago, but written by OLD_RUN 20 days ago: 14 days is too long.
    assert decide_reuse(ctx(repo, reuse_since=NOW - timedelta(days=21)), prev).reusable
    d = decide_reuse(ctx(repo, reuse_since=NOW - timedelta(days=14)), prev)
    assert (d.reusable, d.reason) == (False, "older than backup.full_every")
    # Manifests that do not name the writing run: the item's reused_from, else the previous run.
    legacy = replace(prev, archive=replace(prev.archive, run=""), index=replace(prev.index, run=""))
    assert not decide_reuse(ctx(repo, reuse_since=NOW - timedelta(days=14)), legacy).reusable
    fresh = replace(legacy, reused_from=None)
    assert decide_reuse(ctx(repo, reuse_since=NOW - timedelta(days=14)), fresh).reusable


def test_a_missing_or_shortened_artifact_is_not_referenced_and_is_recorded(repo: Repository,
                                                                            prev: VolumeItem) -> None:
    assert prev.index is not None and prev.archive is not None
    repo.store.delete(prev.index.key)
    d = decide_reuse(ctx(repo), prev, "alice")
    assert (d.reusable, d.reason) == (False, "missing")
    repo.store.put(prev.archive.key, b"arch")
    stats = [(r.key, r.problem, r.found_by, r.run, r.label) for r in load_damage(repo.store)]
    assert stats == [(prev.index.key, "missing", "backup", PREV_RUN, "alice")]
    d = decide_reuse(ctx(repo), prev, "alice")
    assert d.reason == f"4 bytes long, {prev.archive.size} recorded"
    assert damaged_keys(repo.store) == {prev.index.key, prev.archive.key}


def test_next_steps_say_what_to_do() -> None:
    art = Artifact("data/r1/volumes/alice.tar.zst", 10, "0" * 64, run="r1")
    hub = Artifact("data/r1/hub/jupyterhub.sqlite.zst", 10, "0" * 64, run="r1")
    result = VerifyResult(runs=["r2", "r1"])
    assert next_steps(result) == []
    result.damaged += [Damage("r1", "alice", "alice", art, "missing"), Damage("r2", "alice", "alice", art, "missing")]
    steps = next_steps(result)
    assert steps[0].startswith("run `jdr backup`: it reads the volumes of alice again")
    assert "run(s) r2, r1 name damaged artifacts" in steps[1]
    assert len(steps) == 2
    result.damaged.append(Damage("r1", "hub database", None, hub, "integrity_check: bad"))
    result.unchecked = 1
    steps = next_steps(result)
    assert any("restore the hub from a run verified intact" in s for s in steps)
    assert steps[-1].startswith("some artifacts could not be checked")
