"""The ``jdr`` CLI end to end on a local sandbox hub (real JupyterHub DB, real homes, real processes),
against a ``file://`` repository and the real S3 server (SeaweedFS) in turn."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dr.util.timefmt import parse_iso
from tests.fixtures.homes import as_restored
from tests.fixtures.sandbox import SANDBOX_USERS, Sandbox, describe
from tests.restoreutil import home_tree, kept_copies, state_dirs
from tests.treeutil import snapshot_tree, tree_diff


def tree(path: Path, **kw: Any) -> dict[bytes, dict[str, Any]]:
    """The home's entries, leaving out jdr's state and the copies restores handed over (jdr-replaced-*)."""
    return home_tree(path, **kw)


def kept_trees(home: Path) -> list[Path]:
    return kept_copies(home)


def assert_same(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]]) -> None:
    assert a == b, "\n".join(tree_diff(a, b)[:40])


def backup(sb: Sandbox, *args: str, code: int = 0) -> dict[str, Any]:
    doc = sb.jdr_json("backup", *args, code=code)
    assert isinstance(doc, dict)
    return doc


def orm_users(db: Path) -> list[str]:
    """Load the users with JupyterHub's own ORM, as a hub starting on this database would."""
    from jupyterhub import orm

    factory = orm.new_session_factory(f"sqlite:///{db}")
    session = factory()
    try:
        return sorted(u.name for u in session.query(orm.User).all())
    finally:
        session.close()
        factory.kw["bind"].dispose()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


ALL_USERS = sorted(u.name for u in SANDBOX_USERS)


def test_backup_list_show_ls(sandbox: Sandbox) -> None:
    doc = backup(sandbox)
    run = doc["run"]
    assert doc["status"] == "complete"
    m = doc["manifest"]
    assert sorted(v["user"] for v in m["volumes"]) == ALL_USERS
    assert all(v["status"] == "ok" and v["archive"] and v["index"] for v in m["volumes"])
    assert m["hub"]["integrity"] == "ok" and sorted(m["hub"]["users"]) == ALL_USERS

    runs = sandbox.jdr_json("list")
    assert [r["id"] for r in runs] == [run]
    assert runs[0]["status"] == "complete"
    assert parse_iso(runs[0]["time"]) == parse_iso(m["started"])
    text = sandbox.run_jdr("list")
    assert text.returncode == 0 and run in text.stdout
    assert [r["id"] for r in sandbox.jdr_json("list", "--user", "bob")] == [run]

    shown = sandbox.jdr_json("show", run)
    assert shown["run"] == run and shown["status"] == "complete"
    alice = next(v for v in shown["volumes"] if v["user"] == "alice")
    assert alice["archive"]["size"] > 0 and len(alice["archive"]["sha256"]) == 64
    assert sandbox.jdr_json("show", run[:18])["run"] == run  # a unique prefix
    text = sandbox.run_jdr("show", "latest")
    assert text.returncode == 0 and run in text.stdout and alice["archive"]["sha256"] in text.stdout

    listing = sandbox.jdr_json("ls", run, "--user", "alice")
    paths = {e.get("path") for e in listing["entries"]}
    assert {"notebooks/analysis.ipynb", "notebooks/sub/deep.py", "link-file", "empty", "data/random.bin"} <= paths
    assert "caf\xe9.txt" not in paths and any("path_b64" in e for e in listing["entries"])  # non-UTF-8
    link = next(e for e in listing["entries"] if e.get("path") == "link-file")
    assert link["type"] == "symlink" and link["link"] == "notebooks/analysis.ipynb"
    sub = sandbox.jdr_json("ls", "latest", "--user", "alice", "notebooks")
    assert {e["path"] for e in sub["entries"]} == {"notebooks", "notebooks/analysis.ipynb", "notebooks/sub",
                                                   "notebooks/sub/deep.py", "notebooks/hard2"}
    text = sandbox.run_jdr("ls", run, "--user", "alice", "notebooks/*.ipynb")
    assert text.returncode == 0 and "notebooks/analysis.ipynb" in text.stdout and "deep.py" not in text.stdout
    missing = sandbox.run_jdr("ls", run, "--user", "alice", "no/such/thing")
    assert missing.returncode == 2 and "no/such/thing" in missing.stderr


def test_restore_user_brings_back_the_home_entry_by_entry(sandbox: Sandbox) -> None:
    home = sandbox.home("alice")
    with open(home / "sparse.img", "wb") as f:  # 4 KiB of data after a 64 MiB hole
        f.seek(64 << 20)
        f.write(b"\x5a" * 4096)
    before = tree(home)
    run = backup(sandbox)["run"]
    # The disaster: a notebook deleted, a file changed, a new file, a changed mode, a broken hard link.
    (home / "notebooks" / "analysis.ipynb").unlink()
    (home / "secret.key").write_bytes(b"overwritten\n")
    (home / "new.txt").write_text("made after the backup\n")
    (home / "private").chmod(0o755)
    (home / "notebooks" / "hard2").unlink()
    (home / "notebooks" / "hard2").write_text("no longer a link\n")
    damaged = tree(home)

    doc = sandbox.jdr_json("restore", "--user", "alice", "--yes")
    assert doc["status"] == "done" and doc["plan"]["run"] == run
    (item,) = doc["items"]
    assert item["status"] == "ok" and item["target"] == str(home)
    # Type, content, size, mode, uid, gid, mtime, link, hard links: as backed up, but setuid/setgid on
    # files cleared (issue #9 item 4).
    assert_same(tree(home), as_restored(before))
    assert (home / "sparse.img").stat().st_blocks * 512 < 1 << 20  # still sparse
    assert state_dirs(home) == []

    # Everything that was replaced is kept aside, as it was, in a directory the user owns (issue #9
    # item 8: it used to be root-only under .jdr-restore/previous-*).
    (kept,) = kept_trees(home)
    assert item["previous"] == str(kept) and kept.parent == home
    st = kept.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 100, 0o700)
    assert_same(tree(kept, root_attrs=False), {k: v for k, v in damaged.items() if k != b"."})

    # A second restore (discarding what it replaces) leaves the home as it was, with nothing new aside,
    # and leaves the copy the first one handed over where it is.
    again = sandbox.run_jdr("restore", "--user", "alice", "--yes", "--discard-previous")
    assert again.returncode == 0, describe(again)
    assert_same(tree(home), as_restored(before))
    assert kept_trees(home) == [kept]


def test_restore_paths_into_as_dry_run_and_confirmation(sandbox: Sandbox) -> None:
    home = sandbox.home("bob")
    at_backup = tree(home)
    backup(sandbox)
    (home / "notebooks" / "work.ipynb").write_text("changed notebook")
    (home / "notebooks" / "notes.txt").write_text("changed notes")
    (home / "data" / "table.csv").write_text("changed table")
    (home / "notebooks" / "extra.ipynb").write_text("a notebook made after the backup")
    changed = tree(home)

    # --path: only matching files are replaced; the replaced ones are kept aside.
    doc = sandbox.jdr_json("restore", "--user", "bob", "--path", "notebooks/*.ipynb", "--yes")
    assert doc["status"] == "done" and doc["items"][0]["files"] == 1
    now = tree(home)
    assert now[b"notebooks/work.ipynb"] == at_backup[b"notebooks/work.ipynb"]
    for untouched in (b"notebooks/notes.txt", b"data/table.csv", b"data/table-link.csv",
                      b"notebooks/extra.ipynb", b"latest.ipynb", b"data/empty"):
        assert now[untouched] == changed[untouched], untouched
    (kept,) = kept_trees(home)
    assert (kept / "notebooks" / "work.ipynb").read_text() == "changed notebook"
    assert not (kept / "notebooks" / "notes.txt").exists()

    # --into: the whole backup beside the current files; nothing else touched.
    before_into = tree(home, mtimes=False)
    doc = sandbox.jdr_json("restore", "--user", "bob", "--into", "from-backup", "--yes")
    assert doc["status"] == "done"
    beside = snapshot_tree(home / "from-backup")
    assert_same(beside, at_backup)
    assert_same({k: v for k, v in tree(home, mtimes=False).items() if not k.startswith(b"from-backup")},
                before_into)
    again = sandbox.run_jdr("restore", "--user", "bob", "--into", "from-backup", "--yes")
    assert again.returncode == 2 and "already exists" in again.stderr

    # --as: bob's backup into Émile's home.
    emile = sandbox.home("Émile")
    doc = sandbox.jdr_json("restore", "--user", "bob", "--as", "Émile", "--yes")
    assert doc["status"] == "done" and doc["items"][0]["target"] == str(emile)
    assert_same(tree(emile), at_backup)

    # --dry-run and a refused confirmation change nothing anywhere.
    everything = Path(sandbox.homes).parent
    snap = snapshot_tree(everything)
    dry = sandbox.run_jdr("restore", "--user", "bob", "--dry-run")
    assert dry.returncode == 0 and "Restore plan" in dry.stdout and "dry run" in dry.stdout
    assert sandbox.jdr_json("restore", "--user", "bob", "--dry-run")["status"] == "dry-run"
    refused = sandbox.run_jdr("restore", "--user", "bob")  # stdin is not a terminal, no --yes
    assert refused.returncode == 2, describe(refused)
    assert "confirmation" in refused.stderr and "--yes" in refused.stderr
    assert "Restore plan" in refused.stdout  # the plan is printed first
    assert_same(snapshot_tree(everything), snap)


def test_at_time_and_run_selection(sandbox: Sandbox) -> None:
    home = sandbox.home("bob")
    notes = home / "notebooks" / "notes.txt"
    first = backup(sandbox)["manifest"]
    notes.write_text("second version\n")
    second = backup(sandbox)["manifest"]
    runs = sandbox.jdr_json("list")
    assert [r["id"] for r in runs] == [second["run"], first["run"]]  # newest first

    notes.write_text("third version\n")
    doc = sandbox.jdr_json("restore", "--user", "bob", "--at", first["finished"], "--yes")
    assert doc["plan"]["run"] == first["run"]
    assert notes.read_text() == "notes of bob\n"
    doc = sandbox.jdr_json("restore", "--user", "bob", "--run", second["run"], "--yes")
    assert doc["plan"]["run"] == second["run"] and notes.read_text() == "second version\n"

    early = sandbox.run_jdr("restore", "--user", "bob", "--at", "2001-01-01T00:00:00Z", "--yes")
    assert early.returncode == 2 and "no run at or before" in early.stderr


def test_restore_hub_and_all(sandbox: Sandbox) -> None:
    db = sandbox.hub_db
    run = backup(sandbox)["run"]
    # The disaster: users deleted from the hub DB, and bob's notebook gone.
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM users WHERE name IN ('alice', 'bob')")
    conn.commit()
    conn.close()
    assert orm_users(db) == ["dave", "Émile"]

    doc = sandbox.jdr_json("restore", "--hub", "--yes")
    assert doc["status"] == "done" and doc["plan"]["run"] == run
    previous = Path(doc["hub"]["previous"])
    assert previous.parent == db.parent and previous.name.startswith("jupyterhub.sqlite.jdr-previous-")
    assert orm_users(previous) == ["dave", "Émile"]  # the replaced DB is kept
    assert integrity(db) == "ok"
    assert orm_users(db) == ALL_USERS

    bob = sandbox.home("bob")
    bob_before = tree(bob)
    (bob / "notebooks" / "work.ipynb").unlink()
    db.write_bytes(b"this is not a database any more" * 100)
    doc = sandbox.jdr_json("restore", "--all", "--yes")
    assert doc["status"] == "done", doc
    assert {i["label"] for i in doc["items"]} == set(ALL_USERS)
    assert all(i["status"] == "ok" for i in doc["items"])
    assert integrity(db) == "ok" and orm_users(db) == ALL_USERS
    assert_same(tree(bob), bob_before)


def test_verify_deep_and_a_corrupted_artifact(sandbox: Sandbox) -> None:
    doc = backup(sandbox)
    bob = next(v for v in doc["manifest"]["volumes"] if v["user"] == "bob")
    ok = sandbox.jdr_json("verify")
    assert ok["ok"] is True and ok["problems"] == [] and ok["checked"] == 1 + 2 * len(ALL_USERS)
    deep = sandbox.jdr_json("verify", "--deep")
    assert deep["ok"] is True and deep["deep"] is True
    assert sandbox.run_jdr("verify", "latest").returncode == 0

    store = sandbox.store()
    key = bob["archive"]["key"]
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0x40
    store.put(key, bytes(data))  # same size, one bit flipped

    bad = sandbox.jdr_json("verify", code=1)
    assert bad["ok"] is False
    assert any("bob" in p and key in p and "SHA-256" in p for p in bad["problems"]), bad["problems"]
    assert len(bad["problems"]) == 1
    bad_deep = sandbox.jdr_json("verify", "--deep", code=1)
    assert any("bob" in p for p in bad_deep["problems"])
    text = sandbox.run_jdr("verify")
    assert text.returncode == 1 and "PROBLEMS" in text.stdout


def test_unchanged_homes_are_referenced_and_full_uploads_again(sandbox: Sandbox) -> None:
    first = backup(sandbox)["manifest"]
    (sandbox.home("bob") / "notebooks" / "notes.txt").write_text("bob changed this\n")
    second = backup(sandbox)["manifest"]
    r1, r2 = first["run"], second["run"]
    by_user = {v["user"]: v for v in second["volumes"]}
    assert by_user["bob"]["reused_from"] is None and by_user["bob"]["archive"]["run"] == r2
    for user in ("alice", "Émile", "dave"):
        v = by_user[user]
        assert v["reused_from"] == r1, user
        assert v["archive"]["key"].startswith(f"data/{r1}/") and v["index"]["key"].startswith(f"data/{r1}/")
    new_keys = sandbox.keys(f"data/{r2}/volumes/")
    assert len(new_keys) == 2 and all(by_user["bob"]["key"] in k for k in new_keys)
    assert sandbox.jdr_json("verify", r2)["ok"] is True
    # A run that references an earlier run's artifacts restores from them.
    (sandbox.home("alice") / "empty.txt").unlink()
    assert sandbox.jdr_json("restore", "--user", "alice", "--run", r2, "--yes")["status"] == "done"
    assert (sandbox.home("alice") / "empty.txt").exists()

    third = backup(sandbox, "--full")["manifest"]
    r3 = third["run"]
    assert all(v["reused_from"] is None and v["archive"]["run"] == r3 for v in third["volumes"])
    assert len(sandbox.keys(f"data/{r3}/volumes/")) == 2 * len(ALL_USERS)

    only = backup(sandbox, "--user", "bob", "--user", "Émile")["manifest"]
    assert sorted(v["user"] for v in only["volumes"]) == ["bob", "Émile"]
    assert only["options"]["users"] == ["bob", "Émile"]
    assert only["hub"]["db"] is not None


def test_partial_run_and_json_everywhere(sandbox: Sandbox) -> None:
    # A home that cannot be read fails its item; the run commits what succeeded and exits 1. (A home that
    # does not exist at all is "absent", not a failure: tests/e2e/test_local_homes.py.)
    import shutil

    shutil.rmtree(sandbox.home("dave"))
    sandbox.home("dave").write_text("not a directory\n")
    doc = backup(sandbox, code=1)
    assert doc["status"] == "partial"
    dave = next(v for v in doc["manifest"]["volumes"] if v["user"] == "dave")
    assert dave["status"] == "failed" and "is not a directory" in dave["error"]
    runs = sandbox.jdr_json("list")
    assert runs[0]["status"] == "partial"
    refused = sandbox.jdr_json("restore", "--user", "dave", "--yes", code=2)
    assert "dave" in refused["error"] and refused["exit_code"] == 2

    dry = sandbox.jdr_json("backup", "--dry-run")
    assert dry["status"] == "dry-run" and {p["user"] for p in dry["planned"]} == set(ALL_USERS)
    assert next(p for p in dry["planned"] if p["user"] == "dave")["running"] is True
    assert sandbox.jdr_json("unlock") == {"removed": []}
    assert sandbox.jdr_json("catalog", "rebuild") == {"runs": 1}
    pruned = sandbox.jdr_json("prune", "--dry-run")
    assert isinstance(pruned, dict)
    for args in (("show", "latest"), ("ls", "latest", "--user", "bob"), ("verify",),
                 ("restore", "--hub", "--dry-run"), ("restore", "--all", "--dry-run")):
        out = sandbox.run_jdr("--json", *args)
        assert out.returncode == 0, describe(out)
        json.loads(out.stdout)


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_human_output_of_a_backup(sandbox: Sandbox) -> None:
    out = sandbox.run_jdr("backup")
    assert out.returncode == 0, describe(out)
    assert "COMPLETE" in out.stdout and "alice: ok" in out.stdout
