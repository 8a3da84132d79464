"""Two roles, two credentials, and the read-only serve role (docs/CREDENTIALS.md), on a real SeaweedFS that
enforces the IAM policies of docs/policies/ exactly as written there (the ``roles`` fixture,
tests/fixtures/roles.py).

Every request goes through a recording proxy (tests/faultproxy.py), so that "jdr never tries to delete run
data with the backup role" is checked on the wire, not inferred from a success: the server would refuse
such a delete (403), and a refusal that jdr swallowed would still show here.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dr.errors import PermissionDeniedError
from dr.repository.s3 import S3Store
from tests.faultproxy import Rule
from tests.fixtures.roles import BUCKET, PREFIX, URL, Roles
from tests.fixtures.sandbox import Sandbox, _build, describe
from tests.treeutil import snapshot_tree, tree_diff

pytestmark = pytest.mark.s3

NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def sb(roles: Roles, tmp_path: Path, sandbox_hub_template: Path) -> Sandbox:
    """A sandbox hub whose jdr holds the backup role's credentials, on an empty repository."""
    admin = roles.admin.client()
    for key in roles.stored():
        admin.delete_object(Bucket=BUCKET, Key=key)
    sandbox = _build(tmp_path / "sandbox", URL, sandbox_hub_template, full_alice=False)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION"):
        sandbox.env.pop(var, None)
    sandbox.env.update(roles.backup)
    sandbox.write_config(drill={"scratch": str(tmp_path / "drills")})
    roles.proxy.clear()
    return sandbox




def test_the_backup_role_backs_up_restores_verifies_and_drills_and_never_deletes_run_data(
        roles: Roles, sb: Sandbox) -> None:
    for user in sb.users:  # notebooks the drill's check accepts
        (sb.home(user) / "notebooks" / "work.ipynb").write_text(json.dumps(NOTEBOOK))
    run = sb.jdr_json("backup")["run"]
    assert [r["id"] for r in sb.jdr_json("list")] == [run]
    sb.jdr_json("show", "latest")
    assert sb.jdr_json("verify")["ok"] is True
    notebook = sb.home("bob") / "notebooks" / "work.ipynb"
    content = notebook.read_bytes()
    notebook.unlink()
    assert sb.jdr_json("restore", "--user", "bob", "--yes")["status"] == "done"
    assert notebook.read_bytes() == content
    drill = sb.run_jdr("--json", "drill")
    assert drill.returncode == 0, describe(drill)

    assert roles.refused() == [], "the server refused a request of the backup role"
    assert roles.deletes() == [], "jdr tried to delete outside locks/ with the backup role"
    released = roles.deletes(outside_locks=False)
    assert released and all(s.status == 204 for s in released)  # its locks, released
    assert {k for k in roles.stored() if "/locks/" in k} == set()

    # The server, not only jdr's restraint, keeps run data: a delete with the backup role is refused.
    manifest = f"{PREFIX}/runs/{run}.json"
    with pytest.raises(ClientError) as e:
        roles.client(roles.backup).delete_object(Bucket=BUCKET, Key=manifest)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert manifest in roles.stored()


def test_prune_needs_the_prune_role_and_names_the_missing_permission(roles: Roles, sb: Sandbox) -> None:
    sb.jdr_json("backup")
    # Leftovers of a run that never committed: only prune removes them.
    dead = f"{PREFIX}/data/20260101T000000Z-dead00/volumes/bob-x.tar.zst"
    roles.client(roles.backup).put_object(Bucket=BUCKET, Key=dead, Body=b"half a backup")
    # ... recorded damaged by a verify: the record goes with the artifact, also prune's to delete.
    record = f"{PREFIX}/damage/{dead.removeprefix(PREFIX + '/')}.json"
    roles.client(roles.backup).put_object(Bucket=BUCKET, Key=record, Body=b"{}")
    before = roles.stored()

    proc = sb.run_jdr("--json", "prune")
    assert proc.returncode == 3, describe(proc)
    doc = json.loads(proc.stdout)
    assert "may not delete" in doc["error"] and "s3:DeleteObject" in doc["error"], doc
    assert "prune role" in doc["hint"] and "cronjobs/README.md" in doc["hint"], doc
    assert "s3:DeleteObject" in proc.stderr and "Traceback" not in proc.stderr
    assert roles.stored() == before  # nothing deleted, and its lock released

    # The prune role's keys beside the backup role's, as `jdr worker` holds them (one process).
    sb.write_config(repository={"url": URL, "prune_credentials_env": "JDR_PRUNE_"})
    pruned = sb.jdr_json("prune", env={f"JDR_PRUNE_{k}": v for k, v in roles.prune.items()})
    assert pruned["cleaned_runs"] == ["20260101T000000Z-dead00"]
    assert roles.stored() == before - {dead, record}


def test_a_missing_read_or_write_permission_is_named(roles: Roles, sb: Sandbox) -> None:
    """Credentials that may not read or write where the repository is: the error names the permission
    and the resource, for the command (exit 3) and for the store."""
    sb.repo_url = f"s3://{BUCKET}/elsewhere"
    sb.write_config()
    proc = sb.run_jdr("--json", "backup")
    assert proc.returncode == 3, describe(proc)
    doc = json.loads(proc.stdout)
    assert f"s3:GetObject on arn:aws:s3:::{BUCKET}/elsewhere/config.json" in doc["error"], doc
    assert "docs/CREDENTIALS.md" in doc["hint"] and "Traceback" not in proc.stderr
    store = S3Store.from_url(sb.repo_url, endpoint_url=roles.proxy.url, access_key=roles.backup["AWS_ACCESS_KEY_ID"],
                             secret_key=roles.backup["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
    with pytest.raises(PermissionDeniedError, match="may not write") as e:
        store.put("runs/x.json", b"{}")
    assert e.value.permission == "s3:PutObject" and e.value.exit_code == 3


def test_an_attacker_with_the_backup_credentials_deletes_what_they_can_then_the_hub_is_destroyed(
        roles: Roles, sb: Sandbox) -> None:
    sb.jdr_json("backup")
    homes = Path(sb.homes).parent
    truth = {p.name: snapshot_tree(p) for p in sorted(homes.iterdir())}
    users_before = _users(sb.hub_db)

    # The attacker holds the backup CronJob's Secret: delete everything listed, one by one and in batches.
    attacker = roles.client(roles.backup)
    listed = [o["Key"] for page in attacker.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
              for o in page.get("Contents", [])]
    assert listed
    refused = 0
    for key in listed:
        try:
            attacker.delete_object(Bucket=BUCKET, Key=key)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDenied"
            refused += 1
    batch = attacker.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in listed]})
    assert {e["Code"] for e in batch.get("Errors", [])} == {"AccessDenied"}
    assert refused == len(listed) and roles.stored() == set(listed)  # nothing under locks/ to take

    # Then the hub: every home and the hub database gone.
    for home in homes.iterdir():
        subprocess.run(["rm", "-rf", str(home)], check=True)
    sb.hub_db.unlink()

    doc = sb.jdr_json("restore", "--all", "--yes")
    assert doc["status"] == "done", doc
    assert all(i["status"] == "ok" for i in doc["items"]), doc["items"]
    assert _users(sb.hub_db) == users_before
    after = {p.name: snapshot_tree(p) for p in sorted(homes.iterdir())}
    assert after.keys() == truth.keys()
    for name, tree in truth.items():
        assert tree_diff(after[name], tree) == [], name


def _users(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM users"))
    finally:
        conn.close()


def test_an_abort_the_store_refuses_is_left_to_prune(roles: Roles, caplog: pytest.LogCaptureFixture) -> None:
    """A role without s3:AbortMultipartUpload: a given-up upload stays (invisible, with a warning) and the
    prune role's cleanup discards it."""
    def store(role: dict[str, str]) -> S3Store:
        return S3Store.from_url(URL, endpoint_url=roles.proxy.url, access_key=role["AWS_ACCESS_KEY_ID"],
                                secret_key=role["AWS_SECRET_ACCESS_KEY"], region="us-east-1")

    roles.proxy.clear()
    refuse = roles.proxy.add(Rule(method="DELETE", query="uploadId=", status=403, code="AccessDenied"))
    writer = store(roles.backup).open_writer("data/20260101T000000Z-gaveup/volumes/x.tar.zst")
    writer.write(b"\0" * (9 << 20))  # more than one part: a multipart upload
    writer.abort()  # refused: no exception, a warning
    assert refuse.fired == 1
    assert "left to cleanup_incomplete" in caplog.text and "s3:AbortMultipartUpload" in caplog.text
    assert len(store(roles.prune).incomplete_uploads()) == 1
    roles.proxy.clear()
    assert store(roles.prune).cleanup_incomplete(datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert store(roles.prune).incomplete_uploads() == []


def test_the_serve_role_reads_what_jdr_serve_shows_and_the_server_refuses_every_write(
        roles: Roles, sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """``jdr serve`` with the read-only serve role (docs/policies/serve-role.json): every read path of the
    service works — list the runs (and the catalog built from them, a local file), read the manifest and
    the index, read an archive whole (downloads) and by ranged reads — with no request the server refuses
    and no write at all on the wire; every write or delete the key might be used for is refused by the
    server, locks included. (The audit log and rate limits are the service's own: a local file and memory.)"""
    from dr.serve.app import build_context
    from dr.serve.audit import AuditRecord
    from dr.settings import load_settings

    notebook = sb.home("bob") / "notebooks" / "work.ipynb"
    notebook.write_text(json.dumps(NOTEBOOK))
    run = sb.jdr_json("backup")["run"]
    roles.proxy.clear()

    audit = sb.root / "serve-audit.jsonl"
    sb.write_config(serve={"audit_log": str(audit)})
    env = {**sb.env, **roles.serve}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ctx = build_context(load_settings(sb.config, env))
    service = ctx.service
    [uv] = service.volumes_of("bob")
    assert uv.run == run
    manifest, item = service.volume("bob", run, uv.server)
    entries = service.entries(item)
    wanted = [e for e in entries if e.path == b"notebooks/work.ipynb"]
    got = {e.path: b"".join(chunks) for e, chunks in service.read_files(manifest, item, wanted)}
    assert got == {b"notebooks/work.ipynb": notebook.read_bytes()}
    fetch, size = service.repo.artifact_range(item.archive)
    assert fetch(0, 4) == b"\x28\xb5\x2f\xfd" and len(fetch(size - 10, 10)) == 10  # zstd magic; the tail
    ctx.audit.record(AuditRecord(action="download", actor="bob", user="bob", run=run, server=uv.server,
                                 path="notebooks/work.ipynb", entry=1, outcome="ok"))
    assert audit.read_text().count('"download"') == 1  # written beside the service, not in the repository

    seen = roles.proxy.requests()
    assert seen and {s.method for s in seen} <= {"GET", "HEAD"}, sorted({(s.method, s.path) for s in seen})
    assert roles.refused() == [], [(s.method, s.path) for s in roles.refused()]
    assert any(k.lower() == "range" for s in seen for k in s.headers)  # the ranged reads went out

    before = roles.stored()
    serve = roles.client(roles.serve)
    for key in (f"{PREFIX}/runs/{run}.json", f"{PREFIX}/locks/serve.json", f"{PREFIX}/runs/new.json",
                f"{PREFIX}/{item.archive.key}"):
        for attempt in (lambda k: serve.put_object(Bucket=BUCKET, Key=k, Body=b"{}"),
                        lambda k: serve.delete_object(Bucket=BUCKET, Key=k)):
            with pytest.raises(ClientError) as e:
                attempt(key)
            assert e.value.response["Error"]["Code"] == "AccessDenied", (key, e.value.response)
    batch = serve.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in before]})
    assert {e["Code"] for e in batch.get("Errors", [])} == {"AccessDenied"} and not batch.get("Deleted")
    assert roles.stored() == before
