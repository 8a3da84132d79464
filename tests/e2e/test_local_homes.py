"""Ordinary local hubs back up cleanly every night (issue 10, item 5), through the real CLI:

- a hub user without a home (added by an admin, never logged in) is recorded ``absent``: run complete,
  exit 0; a home that exists and cannot be read still fails (run partial, exit 1);
- TLJH's naming (``homes: tljh``): hashed long names are found, not taken for absent users;
- orphan homes (in the layout, of no hub user) are reported, backed up as their own items, and restored
  by ``restore --all``; directories outside the layout are not touched;
- ``backup --user nosuch`` exits 2 before anything is uploaded: the repository gets no new object.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.hub import HubServer, HubUser
from tests.fixtures.sandbox import Sandbox, describe, small_home
from tests.treeutil import snapshot_tree, tree_diff

# TLJH's own example of a long name (tests/test_normalize.py of the-littlest-jupyterhub): the hub user
# "aelie9so…" has the system user (and home) "jupyter-aelie9sohjeequ9iem-4b726".
LONG = "aelie9sohjeequ9iemeipuimuoshahz4aitugiuteeg4ohioh5yuiha6aei7te5z"
LONG_HOME = "jupyter-aelie9sohjeequ9iem-4b726"


def test_a_user_without_a_home_is_absent_not_failed(sandbox: Sandbox) -> None:
    shutil.rmtree(sandbox.home("Émile"))  # never logged in: no home
    doc = sandbox.jdr_json("backup")
    assert doc["status"] == "complete", doc
    items = {v["user"]: v for v in doc["manifest"]["volumes"]}
    assert items["Émile"]["status"] == "absent" and items["Émile"]["archive"] is None
    assert items["Émile"]["error"] is None and doc["manifest"]["failures"] == []
    assert {items[u]["status"] for u in ("alice", "bob", "dave")} == {"ok"}
    proc = sandbox.run_jdr("backup")
    assert proc.returncode == 0, describe(proc)
    assert "Émile: absent" in proc.stdout

    # Restoring a user who had no home is refused clearly; restore --all leaves them alone.
    proc = sandbox.run_jdr("restore", "--user", "Émile", "--yes")
    assert proc.returncode == 2 and "no home of 'Émile'" in proc.stderr, describe(proc)
    plan = sandbox.jdr_json("restore", "--all", "--dry-run")
    assert sorted(s["user"] for s in plan["plan"]["volumes"]) == ["alice", "bob", "dave"]
    assert any("Émile had no home" in w for w in plan["plan"]["warnings"])

    # A home that was backed up and is gone: absent, with a warning naming the run that holds it.
    first = doc["run"]
    shutil.rmtree(sandbox.home("bob"))
    bob = {v["user"]: v for v in sandbox.jdr_json("backup")["manifest"]["volumes"]}["bob"]
    assert bob["status"] == "absent" and bob["warnings"] and "is gone now" in bob["warnings"][0]
    # `restore --user bob` (latest) takes the newest run that holds his home.
    assert sandbox.jdr_json("restore", "--user", "bob", "--yes")["plan"]["run"] != first
    assert (sandbox.home("bob") / "notebooks" / "notes.txt").read_text() == "notes of bob\n"


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_a_home_that_exists_and_cannot_be_read_still_fails(sandbox: Sandbox) -> None:
    shutil.rmtree(sandbox.home("bob"))
    sandbox.home("bob").write_text("not a directory")
    proc = sandbox.run_jdr("--json", "backup")
    assert proc.returncode == 1, describe(proc)
    import json

    doc = json.loads(proc.stdout)
    assert doc["status"] == "partial"
    bob = {v["user"]: v for v in doc["manifest"]["volumes"]}["bob"]
    assert bob["status"] == "failed" and "not a directory" in bob["error"]

    # A wrong template is not "everyone is absent": the homes' directory must exist.
    sandbox.write_config(deployment={"homes": str(sandbox.root / "hmoe" / "jupyter-{username}")})
    proc = sandbox.run_jdr("--json", "backup")
    assert proc.returncode == 1, describe(proc)
    assert all(v["status"] == "failed" and "check deployment.homes" in v["error"]
               for v in json.loads(proc.stdout)["manifest"]["volumes"])


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_tljh_naming_and_orphans(sandbox: Sandbox, make_hub_db: Callable[..., Path]) -> None:
    sb = sandbox
    homes = sb.root / "tljh-home"
    db = make_hub_db(users=(HubUser("alice", admin=True, servers={"": HubServer()}),
                            HubUser(LONG, servers={"": HubServer()}),
                            HubUser("newcomer", servers={"": HubServer(state=None)})))
    small_home(homes / "jupyter-alice", "alice")
    small_home(homes / LONG_HOME, LONG)
    small_home(homes / "jupyter-olduser", "olduser")  # deleted from the hub; the files stay
    small_home(homes / "ubuntu", "ubuntu")  # not a TLJH home: never touched
    (homes / "jupyter-notadir").write_text("a file, not a home")
    # `tljh` is /home/{tljh_username}; the test needs its own directory, so it spells the placeholder.
    sb.write_config(deployment={"hub_db": str(db), "homes": str(homes / "{tljh_username}")})

    proc = sb.run_jdr("--json", "backup")
    assert proc.returncode == 0, describe(proc)
    assert "1 home directories belong to no hub user" in proc.stderr and "jupyter-olduser" in proc.stderr
    import json

    doc = json.loads(proc.stdout)
    assert doc["status"] == "complete"
    items = {v["user"] or v["source"]["path"]: v for v in doc["manifest"]["volumes"]}
    assert sorted(items, key=str) == sorted(["alice", LONG, "newcomer", str(homes / "jupyter-olduser")], key=str)
    assert items[LONG]["status"] == "ok" and items[LONG]["source"]["path"] == str(homes / LONG_HOME)
    assert items["newcomer"]["status"] == "absent"
    orphan = items[str(homes / "jupyter-olduser")]
    assert orphan["status"] == "ok" and orphan["source"] == {"path": str(homes / "jupyter-olduser"),
                                                             "orphan": True}
    assert orphan["files"] > 0 and orphan["key"].startswith("home-jupyter-olduser-")
    dry = sb.run_jdr("backup", "--dry-run")
    assert f"home:{homes / 'jupyter-olduser'}" in dry.stdout and LONG_HOME in dry.stdout, describe(dry)
    show = sb.run_jdr("show", "latest")
    assert f"home:{homes / 'jupyter-olduser'}" in show.stdout, describe(show)

    # A second run references the unchanged orphan (found by its key), as it does users' homes.
    again = json.loads(sb.run_jdr("--json", "backup").stdout)
    orphan2 = next(v for v in again["manifest"]["volumes"] if v["user"] is None)
    assert orphan2["reused_from"] == doc["run"]

    # Disaster: both homes gone. restore --all brings back the user's (hashed name) and the orphan.
    before = {p: snapshot_tree(homes / p) for p in (LONG_HOME, "jupyter-olduser")}
    for p in before:
        shutil.rmtree(homes / p)
    res = sb.jdr_json("restore", "--all", "--yes")
    assert res["status"] == "done", res
    for p, tree in before.items():
        assert tree_diff(tree, snapshot_tree(homes / p)) == []
    assert (homes / "ubuntu" / "notebooks" / "notes.txt").read_text() == "notes of ubuntu\n"
    assert not (homes / "jupyter-newcomer").exists()


@pytest.mark.parametrize("repo_url", ["file", pytest.param("s3", marks=pytest.mark.s3)], indirect=True)
def test_backup_of_an_unknown_user_uploads_nothing(sandbox: Sandbox) -> None:
    sandbox.jdr_json("backup", "--user", "bob")
    before = sandbox.keys()
    proc = sandbox.run_jdr("backup", "--user", "bob", "--user", "nosuch")
    assert proc.returncode == 2, describe(proc)
    assert "unknown user 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr
    assert sandbox.keys() == before
    assert sandbox.incomplete_uploads() == []


def test_ignore_homes_keeps_an_administrators_own_account_out_of_the_orphans(
        sandbox: Sandbox, make_hub_db: Callable[..., Path]) -> None:
    # With `homes: /srv/homes/{username}`, every directory there is in the layout, /home/ubuntu style admin
    # accounts included: ignore_homes names those that are not hub homes; a hub user's home is never ignored.
    sb = sandbox
    homes = sb.root / "plain-homes"
    db = make_hub_db(users=(HubUser("alice", servers={"": HubServer()}),
                            HubUser("admin-carol", servers={"": HubServer()})))
    for name in ("alice", "admin-carol", "ubuntu", "admin-ops", "olduser"):
        small_home(homes / name, name)
    sb.write_config(deployment={"hub_db": str(db), "homes": str(homes / "{username}"),
                                "ignore_homes": [str(homes / "ubuntu"), str(homes / "admin-*")]})
    proc = sb.run_jdr("--json", "backup")
    assert proc.returncode == 0, describe(proc)
    import json

    doc = json.loads(proc.stdout)
    items = {v["user"] or v["source"]["path"]: v for v in doc["manifest"]["volumes"]}
    assert sorted(items) == sorted(["alice", "admin-carol", str(homes / "olduser")])
    assert items["admin-carol"]["status"] == "ok"  # a hub user's home, although it matches admin-*
    assert "1 home directories belong to no hub user" in proc.stderr and "ubuntu" not in proc.stderr

    sb.write_config(deployment={"hub_db": str(db), "homes": str(homes / "{username}"), "ignore_homes": ["ubuntu"]})
    bad = sb.run_jdr("backup")
    assert bad.returncode == 2 and "deployment.ignore_homes: 'ubuntu' is not an absolute path" in bad.stderr, \
        describe(bad)
