"""``copy_runs`` on each destination store (file:// and SeaweedFS): which runs and artifacts are sent,
the destination's ``config.json`` (carried over, brought up to date, another repository refused), and an
artifact damaged at the source that the destination already holds safely (its run is copied: the copy
is what makes such a run survive)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.errors import UsageError
from dr.model import Artifact, Manifest, VolumeItem, new_run_id
from dr.operations.copy import CopyOptions, copy_runs
from dr.repository.damage import record_damage
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.repository.store import Store

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def make_run(repo: Repository, when: datetime, reuse: Artifact | None = None) -> tuple[str, Artifact]:
    """A run with one new volume archive (and, with ``reuse``, a second volume referencing that one)."""
    run = new_run_id(when)
    with repo.artifact_writer(f"data/{run}/volumes/v.tar.zst", run) as w:
        w.write(run.encode() * 1000)
    volumes = [VolumeItem(key="v", user="v", archive=w.artifact)]
    if reuse is not None:
        volumes.append(VolumeItem(key="old", user="old", archive=reuse, reused_from=reuse.run))
    repo.commit_manifest(Manifest(run=run, started=when, finished=when, status="complete", deployment={},
                                  hub=None, volumes=tuple(volumes)))
    return run, w.artifact


def test_copy_sends_only_what_is_missing_and_keeps_config_in_step(store: Store, tmp_path: Path) -> None:
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    first, shared = make_run(source, T0)
    second, _ = make_run(source, T0 + timedelta(days=1), reuse=shared)

    only = copy_runs(source, store, CopyOptions(runs=(first,)))
    assert only.copied == [first] and only.config == "created"
    assert store.get("config.json") == source.store.get("config.json")

    # The shared artifact goes bad at the source (and verify recorded it): the copy already holds it safely,
    # so the second run is copied from what the destination has; nothing is sent twice.
    path = tmp_path / "src" / shared.key
    path.write_bytes(b"x" * shared.size)
    record_damage(source.store, shared, "does not match its SHA-256", found_by="verify", found=T0)
    # The source's config changed (a recipient added by `jdr key add-recipient`, say): brought up to date.
    config = json.loads(source.store.get("config.json"))
    source.store.put("config.json", json.dumps({**config, "note": "rotated"}, indent=2).encode())

    rest = copy_runs(source, store, CopyOptions())
    assert rest.status == "complete" and rest.copied == [second] and rest.config == "updated"
    (rc,) = rest.runs
    assert (rc.artifacts_copied, rc.artifacts_present) == (1, 1)
    assert store.get(f"runs/{second}.json") == source.store.get(f"runs/{second}.json")
    assert store.get(shared.key) != path.read_bytes()  # the good bytes, from the first copy
    assert store.get("config.json") == source.store.get("config.json")
    assert copy_runs(source, store, CopyOptions()).copied == []


def test_a_destination_holding_another_repository_is_refused_untouched(store: Store, tmp_path: Path) -> None:
    other = Repository.open(store, create=True)
    make_run(other, T0)
    before = {o.key: store.get(o.key) for o in store.list("")}
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    make_run(source, T0 + timedelta(days=1))
    with pytest.raises(UsageError, match="another jdr repository"):
        copy_runs(source, store, CopyOptions())
    assert {o.key: store.get(o.key) for o in store.list("")} == before  # nothing written, no lock left


class _NoMultipartListing(FileStore):
    """A destination whose credentials may not list incomplete uploads (no s3:ListBucketMultipartUploads)."""

    def cleanup_incomplete(self, older_than: datetime) -> int:
        from dr.errors import RepositoryError

        raise RepositoryError("S3 denied access to list incomplete uploads in s3://second (AccessDenied)")


def test_a_destination_that_cannot_list_incomplete_uploads_is_still_copied_to(tmp_path: Path) -> None:
    source = Repository.open(FileStore(tmp_path / "src"), create=True)
    run, _ = make_run(source, T0)
    result = copy_runs(source, _NoMultipartListing(tmp_path / "dst"), CopyOptions())
    assert result.status == "complete" and result.copied == [run]
