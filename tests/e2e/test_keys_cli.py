"""Key management end to end: the ``jdr`` CLI on a sandbox hub, against ``file://`` and the real S3 server.

The repository records its recipients (public keys); a backup with a key that is not one of them is
refused before anything is uploaded; rotation and an added recovery recipient leave every run restorable
with the keys it lists; a lost key is named by fingerprint; ``list``/``show`` need no key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sandbox import Sandbox, describe
from tests.treeutil import snapshot_tree, tree_diff

RESTORE_DIR = b".jdr-restore"


def new_key(sb: Sandbox, name: str) -> tuple[Path, str]:
    """A new key file made by the real ``jdr key generate``; returns (path, its age1… recipient)."""
    path = sb.root / f"{name}.key"
    doc = sb.jdr_json("key", "generate", str(path))
    return path, str(doc["recipient"])


def fingerprint(recipient: str) -> str:
    """As docs/FORMAT.md defines it: the first 16 hex digits of the SHA-256 of the ``age1…`` text."""
    return hashlib.sha256(recipient.encode()).hexdigest()[:16]


def stored(sb: Sandbox) -> dict[str, int]:
    """Every object of the repository but the transient locks, with its size."""
    return {o.key: o.size for o in sb.store().list("") if not o.key.startswith("locks/")}


def tree(path: Path) -> dict[bytes, dict[str, Any]]:
    return {k: v for k, v in snapshot_tree(path).items()
            if k != RESTORE_DIR and not k.startswith(RESTORE_DIR + b"/")}


@pytest.fixture
def sb(make_sandbox: Any, repo_url: str) -> Sandbox:
    return make_sandbox(repo_url)  # type: ignore[no-any-return]


def test_backup_with_a_key_that_is_not_a_recipient_is_refused_before_anything_is_uploaded(sb: Sandbox) -> None:
    key_a, _ = new_key(sb, "a")
    key_b, rec_b = new_key(sb, "b")
    sb.write_config(encryption={"key_file": str(key_a)})
    first = sb.jdr_json("backup")
    assert first["status"] == "complete"
    (sb.home("bob") / "new.txt").write_text("changed after the first run\n")
    before = stored(sb)

    sb.write_config(encryption={"key_file": str(key_b)})
    proc = sb.run_jdr("backup")
    assert proc.returncode == 2, describe(proc)
    assert fingerprint(rec_b) in proc.stderr and "add-recipient" in proc.stderr and "rotate" in proc.stderr
    assert stored(sb) == before, "a refused backup must upload nothing"
    assert sb.incomplete_uploads() == []
    assert [r["id"] for r in sb.jdr_json("list")] == [first["run"]]


def run_keys(manifest: dict[str, Any]) -> set[str]:
    """The fingerprints a run lists: those every encrypted artifact of it is encrypted to."""
    arts = [manifest["hub"]["db"], manifest["hub"]["secret"]] + \
        [v[k] for v in manifest["volumes"] for k in ("archive", "index")]
    sets = [set(a["recipients"]) for a in arts if a and a["encoding"].endswith("age")]
    assert sets and all(sets), "every encrypted artifact records its recipients"
    return set.intersection(*sets)


def reused(doc: dict[str, Any]) -> dict[str, str | None]:
    return {v["user"]: v["reused_from"] for v in doc["manifest"]["volumes"]}


def assert_same(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]]) -> None:
    assert a == b, "\n".join(tree_diff(a, b)[:40])


def test_recovery_recipient_and_rotation_keep_every_run_restorable_with_the_keys_it_lists(sb: Sandbox) -> None:
    key_a, rec_a = new_key(sb, "a")
    key_r, rec_r = new_key(sb, "recovery")
    key_n, rec_n = new_key(sb, "n")
    fa, fr, fn = fingerprint(rec_a), fingerprint(rec_r), fingerprint(rec_n)
    sb.write_config(encryption={"key_file": str(key_a)})
    run1 = sb.jdr_json("backup")

    added = sb.jdr_json("key", "add-recipient", rec_r, "--name", "recovery (offline)")
    assert added["changed"] and [r["fingerprint"] for r in added["recipients"]] == [fa, fr]
    assert sorted(added["reupload"]) == sorted(sb.users)  # all encrypted to a alone so far
    run2 = sb.jdr_json("backup")
    assert set(reused(run2).values()) == {None}, "nothing encrypted to the old recipients alone is reused"
    (sb.home("bob") / "new.txt").write_text("bob's new work\n")
    bob_at_run3 = tree(sb.home("bob"))
    run3 = sb.jdr_json("backup")
    assert reused(run3)["alice"] == run2["run"] and reused(run3)["bob"] is None  # reuse still works

    rotated = sb.jdr_json("key", "rotate", "--new-key", str(key_n))
    assert [r["fingerprint"] for r in rotated["recipients"]] == [fn, fr]
    assert [r["fingerprint"] for r in rotated["retired"]] == [fa] and rotated["retired"][0]["replaced_by"] == fn
    refused = sb.run_jdr("backup")  # the old key is still configured: refused, and told what to do
    assert refused.returncode == 2 and "retired" in refused.stderr and "encryption.identities" in refused.stderr
    sb.write_config(encryption={"key_file": str(key_n), "identities": [str(key_a)]})
    run4 = sb.jdr_json("backup")
    assert set(reused(run4).values()) == {None}
    (sb.home("Émile") / "more.txt").write_text("x\n")
    run5 = sb.jdr_json("backup")
    assert reused(run5)["alice"] == run4["run"] and reused(run5)["Émile"] is None

    runs = {d["run"]: d["manifest"] for d in (run1, run2, run3, run4, run5)}
    listed = {run: run_keys(m) for run, m in runs.items()}
    assert listed == {run1["run"]: {fa}, run2["run"]: {fa, fr}, run3["run"]: {fa, fr},
                      run4["run"]: {fn, fr}, run5["run"]: {fn, fr}}
    files = {fa: key_a, fr: key_r, fn: key_n}
    for run, fps in listed.items():
        for fp in fps:  # every run opens with each key it lists, alone
            sb.write_config(encryption={"key_file": str(files[fp])})
            deep = sb.jdr_json("verify", run, "--deep")
            assert deep["ok"] and deep["checked"] >= 9, (run, fp, deep)

    # The recovery key alone really restores a run made after it was added: bob's home as of run 3.
    sb.write_config(encryption={"key_file": str(key_r)})
    done = sb.jdr_json("restore", "--user", "bob", "--run", run3["run"], "--into", "from-recovery", "--yes")
    assert done["status"] == "done"
    assert_same(tree(sb.home("bob") / "from-recovery"), bob_at_run3)

    usage = sb.jdr_json("key", "list")
    by_fp = {e["fingerprint"]: e for e in usage["recipients"] + usage["retired"]}
    assert sorted(by_fp[fr]["runs"]) == sorted([run2["run"], run3["run"], run4["run"], run5["run"]])
    assert sorted(by_fp[fa]["runs"]) == sorted([run1["run"], run2["run"], run3["run"]])
    assert sorted(by_fp[fn]["runs"]) == sorted([run4["run"], run5["run"]])
    assert by_fp[fr]["configured"] and usage["unreadable_runs"] == [run1["run"]]
    assert {r["run"]: set(r["keys"]) for r in usage["runs"]} == listed  # what scripts check runs against


def test_a_lost_key_is_named_and_list_show_need_no_key(sb: Sandbox) -> None:
    for user in sb.users:  # valid notebooks, so that a drill passes on what it can open
        (sb.home(user) / "notebooks" / "work.ipynb").write_text(json.dumps(
            {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    key_a, rec_a = new_key(sb, "a")
    key_n, rec_n = new_key(sb, "n")
    sb.write_config(encryption={"key_file": str(key_a)})
    run1 = sb.jdr_json("backup")["run"]
    sb.jdr_json("key", "rotate", "--new-key", str(key_n))
    sb.write_config(encryption={"key_file": str(key_n)})  # the old key is lost
    run2 = sb.jdr_json("backup")["run"]
    (sb.home("bob") / "notebooks" / "notes.txt").unlink()

    for args in (("restore", "--user", "bob", "--run", run1, "--yes"), ("restore", "--all", "--run", run1, "--yes"),
                 ("restore", "--hub", "--run", run1, "--yes")):
        lost = sb.run_jdr(*args)
        assert lost.returncode == 2, describe(lost)
        assert fingerprint(rec_a) in lost.stderr and "retired" in lost.stderr, lost.stderr
        assert "cannot open runs made before" in lost.stderr and fingerprint(rec_n) in lost.stderr
    assert not (sb.home("bob") / "notebooks" / "notes.txt").exists(), "a refused restore changes nothing"
    deep = sb.jdr_json("verify", run1, "--deep", code=1)
    assert any(fingerprint(rec_a) in p for p in deep["problems"])
    assert sb.jdr_json("verify", run2, "--deep")["ok"]
    drill = sb.run_jdr("--json", "drill", "--run", run1, "--no-start-hub")  # a drill finds it too
    assert drill.returncode == 1 and fingerprint(rec_a) in drill.stdout, describe(drill)
    ok = sb.run_jdr("drill", "--run", run2, "--no-start-hub")
    assert ok.returncode == 0, describe(ok)

    sb.write_config()  # no key at all: the manifests and the recipients are plain
    runs = sb.jdr_json("list")
    assert [r["id"] for r in runs] == [run2, run1]
    shown = sb.run_jdr("show", run1)
    assert shown.returncode == 0 and f"keys: {fingerprint(rec_a)}" in shown.stdout, describe(shown)
    assert run_keys(sb.jdr_json("show", run2)) == {fingerprint(rec_n)}
    usage = sb.jdr_json("key", "list")
    assert [r["fingerprint"] for r in usage["recipients"]] == [fingerprint(rec_n)]
    assert usage["configured"] == [] and sorted(usage["unreadable_runs"]) == sorted([run1, run2])
    text = sb.run_jdr("key", "list")
    assert text.returncode == 0 and rec_n in text.stdout and "retired" in text.stdout
    no_key = sb.run_jdr("ls", run2, "--user", "bob")  # the file index is encrypted: it needs the key
    assert no_key.returncode == 2 and fingerprint(rec_n) in no_key.stderr
