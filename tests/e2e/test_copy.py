"""``jdr copy`` end to end: a sandbox hub backed up, its runs replicated to a second repository (another
directory, another SeaweedFS bucket with its own credentials variables), the first repository destroyed,
and the hub and a user restored — and a drill passed — from the copy alone. Also: a copy killed mid-way
and a destination that goes away mid-copy are resumed without sending again what is safe there, a
damaged source artifact is reported and not copied as good, and never a manifest without its artifacts."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dr.model import Manifest
from dr.repository.file import FileStore
from dr.repository.store import Store
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.s3 import S3Server
from tests.fixtures.sandbox import Sandbox, describe
from tests.restoreutil import home_tree
from tests.treeutil import tree_diff


def assert_same(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]]) -> None:
    assert a == b, "\n".join(tree_diff(a, b)[:40])


def copy_json(sb: Sandbox, *args: str, code: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    doc = sb.jdr_json("copy", *args, code=code, env=env)
    assert isinstance(doc, dict)
    return doc


def runs_in(store: Store) -> list[str]:
    return sorted(o.key[len("runs/"):-len(".json")] for o in store.list("runs/"))


def assert_every_manifest_complete(store: Store) -> None:
    """The destination's invariant: each manifest's artifacts are there, at their recorded sizes."""
    for run in runs_in(store):
        manifest = Manifest.from_dict(json.loads(store.get(f"runs/{run}.json")))
        for art in manifest.artifacts():
            assert store.stat(art.key).size == art.size, (run, art.key)


def s3_copy_env(server: S3Server) -> dict[str, str]:
    """The second repository's credentials, in the variables ``copy.*_env`` name by default."""
    return {"JDR_COPY_AWS_ACCESS_KEY_ID": server.access_key, "JDR_COPY_AWS_SECRET_ACCESS_KEY": server.secret_key}


NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def two_runs(sb: Sandbox) -> tuple[str, str]:
    for user in sb.users:  # valid notebooks: a drill checks them
        (sb.home(user) / "notebooks" / "work.ipynb").write_text(NOTEBOOK)
    first = sb.jdr_json("backup")["run"]
    (sb.home("bob") / "notebooks" / "notes.txt").write_text("bob's second thoughts\n")
    second = sb.jdr_json("backup")["run"]
    return first, second


@pytest.mark.parametrize("dest", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_restore_and_drill_from_the_copy_after_losing_the_repository(
        dest: str, make_sandbox: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = {}
    if dest == "file":
        sb = make_sandbox(f"file://{tmp_path / 'repo'}")
        to = f"file://{tmp_path / 'second'}"
        copy_cfg: dict[str, Any] = {"to": to}
    else:
        source_url = request.getfixturevalue("s3_bucket")  # the first repository: one bucket …
        server: S3Server = request.getfixturevalue("s3_server")
        sb = make_sandbox(source_url)
        to = f"s3://{server.new_bucket()}/copy"  # … and the copy in another, with its own variables
        copy_cfg = {"to": to, "endpoint_url": server.endpoint_url, "region": server.region}
        env = s3_copy_env(server)
    sb.write_config(copy=copy_cfg, drill={"scratch": str(tmp_path / "drills")})
    first, second = two_runs(sb)

    dry = copy_json(sb, "--dry-run", env=env)
    assert dry["status"] == "dry-run" and dry["planned"] == [second, first]

    doc = copy_json(sb, env=env)
    assert doc["status"] == "complete" and doc["config"] == "created", doc
    assert [r["run"] for r in doc["runs"]] == [second, first]  # newest first
    assert all(r["status"] == "copied" for r in doc["runs"])
    # The older run's unchanged volumes are the newer run's references: sent once, not twice.
    assert doc["runs"][1]["artifacts_present"] > 0 and doc["runs"][1]["artifacts_copied"] >= 1

    src, dst = sb.store(), _store(to, env)
    assert runs_in(dst) == runs_in(src) == sorted([first, second])
    for key in ("config.json", f"runs/{first}.json", f"runs/{second}.json", f"reports/{second}.txt"):
        assert dst.get(key) == src.get(key)  # byte for byte
    assert_every_manifest_complete(dst)

    again = copy_json(sb, env=env)  # incremental: nothing new
    assert again["status"] == "complete" and again["runs"] == [] and again["already_present"] == 2
    assert again["config"] == "unchanged"

    # The disaster: the first repository is gone, and so are bob's notebook and the hub's users.
    bob_before = home_tree(sb.home("bob"))
    if dest == "file":
        shutil.rmtree(tmp_path / "repo")
    else:
        for o in list(src.list("")):
            src.delete(o.key)
        assert list(src.list("")) == []
    (sb.home("bob") / "notebooks" / "work.ipynb").unlink()
    conn = sqlite3.connect(sb.hub_db)
    conn.execute("DELETE FROM users WHERE name = 'alice'")
    conn.commit()
    conn.close()

    # Restore and drill read the copy through the ordinary repository setting: JDR_REPOSITORY (S3, with
    # the copy's endpoint and credentials in the AWS_* variables), or `jdr --repository URL`.
    from_copy: dict[str, str] = {}
    flag: tuple[str, ...] = ()
    if dest == "s3":
        from_copy |= {"JDR_REPOSITORY": to, "AWS_ENDPOINT_URL": server.endpoint_url,
                      "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
                      "AWS_DEFAULT_REGION": server.region}
    else:
        flag = ("--repository", to)
    assert sb.jdr_json(*flag, "list", env=from_copy)[0]["id"] == second
    user = sb.jdr_json(*flag, "restore", "--user", "bob", "--yes", env=from_copy)
    assert user["status"] == "done", user
    assert_same(home_tree(sb.home("bob")), bob_before)
    hub = sb.jdr_json(*flag, "restore", "--hub", "--yes", env=from_copy)
    assert hub["status"] == "done" and hub["plan"]["run"] == second
    names = {r[0] for r in sqlite3.connect(sb.hub_db).execute("SELECT name FROM users")}
    assert "alice" in names
    if dest == "s3":
        return  # the drill reads the copy the same way; once (on file://) is enough for the CI budget
    drill = sb.run_jdr("--json", *flag, "drill", env=from_copy, timeout=300)
    assert drill.returncode == 0, describe(drill)
    assert json.loads(drill.stdout)["ok"] is True


def _store(url: str, env: dict[str, str]) -> Store:
    if url.startswith("file://"):
        return FileStore.from_url(url)
    from dr.repository.s3 import S3Store

    return S3Store.from_url(url, access_key=env["JDR_COPY_AWS_ACCESS_KEY_ID"],
                            secret_key=env["JDR_COPY_AWS_SECRET_ACCESS_KEY"])


def test_a_killed_copy_resumes_without_sending_again(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(f"file://{tmp_path / 'repo'}")
    to = f"file://{tmp_path / 'second'}"
    sb.write_config(copy={"to": to})
    first, second = two_runs(sb)
    dst = FileStore.from_url(to)

    # Killed in the middle of an artifact: nothing of it is visible, no manifest.
    sb.kill_at("copy-artifact", "copy", after=1)
    assert runs_in(dst) == []
    # Killed with every artifact of the newest run sent, before its manifest: still no run there.
    sb.kill_at("copy-commit", "copy")
    assert runs_in(dst) == []
    sent = [o.key for o in dst.list("data/")]
    assert sent, "the artifacts of the newest run were sent before the kill"

    doc = copy_json(sb)
    assert doc["status"] == "complete", doc
    newest = doc["runs"][0]
    assert newest["run"] == second and newest["artifacts_copied"] == 0  # all verified there already
    assert newest["artifacts_present"] == len(Manifest.from_dict(
        json.loads(dst.get(f"runs/{second}.json"))).artifacts())
    assert runs_in(dst) == sorted([first, second])
    assert_every_manifest_complete(dst)
    assert not (dst.root / ".incomplete").exists() or not any((dst.root / ".incomplete").iterdir())


@pytest.mark.s3
def test_a_destination_outage_fails_honestly_and_the_next_copy_completes(
        make_sandbox: Any, tmp_path: Path, s3_server: S3Server) -> None:
    sb = make_sandbox(f"file://{tmp_path / 'repo'}")
    first, second = two_runs(sb)
    bucket = s3_server.new_bucket()
    to = f"s3://{bucket}/copy"
    env = s3_copy_env(s3_server)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        sb.write_config(copy={"to": to, "endpoint_url": proxy.url, "region": s3_server.region})
        # The destination stops answering after the first artifacts (every write from the 3rd on).
        proxy.add(Rule(method="PUT", path="/data/", nth=3, times=None, status=503))
        doc = copy_json(sb, code=3, env=env)
        assert doc["status"] == "failed" and doc["error_kind"] == "TransientStorageError", doc
        assert doc["runs"][0]["status"] == "failed"
        dst = s3_server.store(to)
        assert runs_in(dst) == []  # no manifest for a run whose artifacts did not all arrive
        assert [o.key for o in dst.list("data/")], "some artifacts arrived before the outage"

        proxy.clear()
        done = copy_json(sb, env=env)
        assert done["status"] == "complete", done
        assert done["runs"][0]["artifacts_present"] >= 1  # what arrived before is not sent again
        assert runs_in(dst) == sorted([first, second])
        assert_every_manifest_complete(dst)


def test_a_damaged_source_artifact_is_not_copied_as_good(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox(f"file://{tmp_path / 'repo'}")
    to = f"file://{tmp_path / 'second'}"
    sb.write_config(copy={"to": to})
    first, second = two_runs(sb)
    src = sb.store()
    manifest = Manifest.from_dict(json.loads(src.get(f"runs/{second}.json")))
    bob = next(v for v in manifest.volumes if v.user == "bob")
    assert bob.archive is not None and bob.archive.run == second  # written by the second run
    path = FileStore.from_url(sb.repo_url).root / bob.archive.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the checksum can tell
    path.write_bytes(bytes(data))

    proc = sb.run_jdr("--json", "copy")
    assert proc.returncode == 1, describe(proc)  # partial
    doc = json.loads(proc.stdout)
    assert doc["status"] == "partial"
    by_run = {r["run"]: r for r in doc["runs"]}
    assert by_run[second]["status"] == "failed" and bob.archive.key in by_run[second]["error"]
    assert by_run[first]["status"] == "copied"
    dst = FileStore.from_url(to)
    assert runs_in(dst) == [first]
    assert not (dst.root / bob.archive.key).exists()
    assert_every_manifest_complete(dst)
    # Recorded at the source, so that the next backup stores bob's volume afresh.
    assert src.stat(f"damage/{bob.archive.key}.json").size > 0
    assert "damaged at the source" in by_run[second]["error"]
