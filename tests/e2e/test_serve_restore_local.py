"""The self-service restore contract on the local deployment: ``VolumeRestore(exact_paths=…,
while_running=True, into=…, replace_file=…)`` through ``Deployment.restore_volume``, on a real backup of
a sandbox hub (file://). The Kubernetes adapter honours the same contract (helper servek8s)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dr.deployments.base import VolumeRestore
from dr.errors import NotFoundError, UsageError
from dr.settings import load_settings
from dr.wiring import make_deployment
from tests.fixtures.sandbox import Sandbox, _build
from tests.restoreutil import state_dirs
from tests.treeutil import snapshot_tree, tree_diff


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory, sandbox_hub_template: Path) -> Sandbox:
    """One backup for the module (the tests restore into distinct new directories)."""
    root = tmp_path_factory.mktemp("serve-restore-local")
    sb = _build(root / "sandbox", f"file://{root / 'repo'}", sandbox_hub_template, full_alice=False)
    proc = sb.run_jdr("backup")
    assert proc.returncode == 0, proc.stderr
    return sb


def _setup(sb: Sandbox):  # type: ignore[no-untyped-def]
    repo = sb.repo()
    manifest = repo.load_manifest(repo.run_ids()[-1])
    item = manifest.volume_for("alice")
    assert item is not None
    return repo, item, make_deployment(load_settings(sb.config))


def test_while_running_creates_new_files_only(backed_up: Sandbox) -> None:
    sb = backed_up
    repo, item, dep = _setup(sb)
    home = sb.home("alice")
    (home / "notebooks" / "work.ipynb").write_text("changed since the backup")
    before = snapshot_tree(home)
    res = dep.restore_volume(VolumeRestore(item=item, target_user="alice", into="restored/2026-12-01",
                                           exact_paths=("notebooks/work.ipynb", "data"), while_running=True),
                             repo)
    assert res.target == str(home / "restored" / "2026-12-01") and res.previous is None
    after = snapshot_tree(home, root_attrs=False)
    changed = tree_diff({k: v for k, v in before.items() if k != b"."}, {k: v for k, v in after.items()
                                                                         if not k.startswith(b"restored")
                                                                         and k != b"."})
    assert changed == []  # nothing that existed was touched
    got = home / "restored" / "2026-12-01"
    assert json.loads((got / "notebooks" / "work.ipynb").read_text())["user"] == "alice"
    assert (got / "data" / "table.csv").read_bytes() == (home / "data" / "table.csv").read_bytes()
    assert not (got / "latest.ipynb").exists()  # exactly what was named
    assert os.stat(got / "notebooks" / "work.ipynb").st_uid == 1000
    assert state_dirs(home) == []
    # The same directory again: refused before anything is written.
    with pytest.raises(UsageError, match="already exists"):
        dep.restore_volume(VolumeRestore(item=item, target_user="alice", into="restored/2026-12-01",
                                         exact_paths=("data",), while_running=True), repo)


def test_refusals_before_anything_is_written(backed_up: Sandbox) -> None:
    sb = backed_up
    repo, item, dep = _setup(sb)
    home = sb.home("alice")
    before = snapshot_tree(home)
    for kwargs, error in (
        ({"exact_paths": ("no/such/file",), "into": "restored/x"}, NotFoundError),
        ({"exact_paths": ("data/table.csv",)}, UsageError),  # while_running needs into
        ({"exact_paths": ("data",), "into": "restored/x", "replace_file": True}, UsageError),  # a folder
        ({"exact_paths": ("../etc/passwd",), "into": "restored/x"}, NotFoundError),
    ):
        with pytest.raises(error):
            dep.restore_volume(VolumeRestore(item=item, target_user="alice", while_running=True,
                                             **kwargs), repo)  # type: ignore[arg-type]
    assert tree_diff(before, snapshot_tree(home)) == []


def test_replace_file_keeps_the_current_one_beside_it(backed_up: Sandbox) -> None:
    sb = backed_up
    repo, item, dep = _setup(sb)
    home = sb.home("alice")
    nb = home / "notebooks" / "work.ipynb"
    nb.write_text("today's version")
    res = dep.restore_volume(VolumeRestore(item=item, target_user="alice", into="restored/r1",
                                           exact_paths=("notebooks/work.ipynb",), while_running=True,
                                           replace_file=True), repo)
    assert res.target == str(nb)
    assert json.loads(nb.read_text())["user"] == "alice"
    assert res.previous is not None
    kept = Path(res.previous)
    assert kept.parent == nb.parent and kept.name.startswith("work.jdr-") and kept.suffix == ".ipynb"
    assert kept.read_text() == "today's version"
    assert not (home / "restored" / "r1" / "notebooks" / "work.ipynb").exists()  # moved into place


def test_downloads_are_checked_against_the_index(backed_up: Sandbox) -> None:
    """SelfService.read_files streams each file from the archive and checks it against the index's SHA-256:
    content that does not match raises IntegrityError after the last chunk (the web layer then aborts the
    response instead of finishing it)."""
    import dataclasses

    from dr.catalog import Catalog
    from dr.errors import IntegrityError
    from dr.operations.self_service import SelfService

    repo, item, dep = _setup(backed_up)
    service = SelfService(lambda: (repo, Catalog("sqlite://", repository_url=repo.url,
                                                 repository_id=repo.id)), dep)
    manifest = repo.load_manifest(item.archive.run if item.archive and item.archive.run else repo.run_ids()[-1])
    assert [v.run for v in service.volumes_of("alice")] == [manifest.run]
    _, item = service.volume("alice", manifest.run, "")
    _top, chosen = service.selection(item, next(i for i, e in enumerate(service.entries(item))
                                               if e.name == "data"))
    got = {e.name: b"".join(chunks) for e, chunks in service.read_files(manifest, item, chosen)}
    home = backed_up.home("alice")
    # The regular file(s) of the folder (table.csv and its hard link hold the same content).
    assert got and all(v == (home / "data" / "table.csv").read_bytes() for v in got.values())
    table = next(e for e in chosen if e.type == "file")
    forged = dataclasses.replace(table, sha256="0" * 64)
    with pytest.raises(IntegrityError, match="does not match the index"):
        for _, chunks in service.read_files(manifest, item, [forged]):
            for _ in chunks:
                pass
    with pytest.raises(NotFoundError):
        service.volume("bob", manifest.run, "nope")
