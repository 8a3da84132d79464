"""The hub side of a local deployment through the CLI: the hub DB backed up while another process writes
to it, and a user's running server stopped through the Hub API of a real ``jupyterhub`` before a restore."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_local_cli import orm_users
from tests.fixtures.hub import HubProcess, HubWriter
from tests.fixtures.sandbox import Sandbox, describe


def test_hub_db_backed_up_under_continuous_writes_restores_sound(sandbox: Sandbox,
                                                                 hub_writer: Callable[[Path], HubWriter]) -> None:
    writer = hub_writer(sandbox.hub_db)
    writer.wait_for_commits(20)
    during: list[int] = []

    def write_while_backup_runs() -> None:
        # jdr is held inside its capture (source connection open, copy not begun): the writer proves it
        # commits during the backup by committing 10 more transactions now, whatever the machine's load.
        start = writer.commits
        during.append(writer.wait_for_commits(start + 10) - start)
        during.append(writer.last_token_id)

    proc = sandbox.run_paused("hubdb-capture", write_while_backup_runs, "--json", "backup")
    assert proc.returncode == 0, describe(proc)
    doc = json.loads(proc.stdout)
    writer.wait_for_commits(writer.commits + 10)  # still writing after the backup
    writer.stop()
    assert during[0] >= 10, "the writer made no commits while the backup ran"
    token_at_resume = during[1]
    hub = doc["manifest"]["hub"]
    assert hub["status"] == "ok" and hub["integrity"] == "ok" and hub["alembic_revision"]

    assert sandbox.jdr_json("verify", "--deep")["ok"] is True  # the stored DB passes integrity_check
    doc = sandbox.jdr_json("restore", "--hub", "--yes")
    assert doc["status"] == "done"
    conn = sqlite3.connect(sandbox.hub_db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tokens, newest = conn.execute("SELECT count(*), max(id) FROM api_tokens").fetchone()
    finally:
        conn.close()
    assert tokens > 0
    # The copy is of the live database after those writes: it holds the token committed last before jdr
    # went on (token ids only grow, and the writer deletes only its oldest tokens).
    assert newest >= token_at_resume
    assert orm_users(sandbox.hub_db) == sorted(sandbox.users)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not running either
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_restore_stops_a_running_server_through_the_hub_api(
        sandbox: Sandbox, jupyterhub_process: Callable[..., HubProcess]) -> None:
    hub = jupyterhub_process(users=("alice", "bob"), stop_delay=1.0, slow_stop_timeout=0.5)
    sandbox.write_config(deployment={"hub_db": str(hub.db_path)},
                         hub_api={"url": hub.url, "token_env": "JDR_TEST_HUB_TOKEN"})
    sandbox.env["JDR_TEST_HUB_TOKEN"] = hub.token
    doc = sandbox.jdr_json("backup")  # the DB of a live hub
    volumes = doc["manifest"]["volumes"]
    assert sorted(v["user"] for v in volumes if v["user"] is not None) == ["alice", "bob"]
    # This hub has no dave or Émile: their sandbox homes belong to no hub user, so they are orphans.
    assert sorted(Path(v["source"]["path"]).name for v in volumes if v["user"] is None) == \
        ["jupyter-dave", "jupyter-Émile"]

    hub.start_server("bob")
    pid = hub.server_pid("bob")
    assert pid and _alive(pid)
    api = hub.admin_api()
    assert api.is_running("bob")
    notes = sandbox.home("bob") / "notebooks" / "notes.txt"
    notes.write_text("changed while the server ran\n")

    started = time.monotonic()
    proc = sandbox.run_jdr("restore", "--user", "bob", "--yes")
    assert proc.returncode == 0, describe(proc)
    assert time.monotonic() - started >= 1.0  # it waited for the slow stop (202, then polling)
    assert not api.is_running("bob")
    assert not _alive(pid)
    assert notes.read_text() == "notes of bob\n"
    assert not api.is_running("alice")

    # Without a token for the configured Hub API, jdr refuses before touching anything.
    sandbox.env.pop("JDR_TEST_HUB_TOKEN")
    notes.write_text("changed again\n")
    refused = sandbox.run_jdr("restore", "--user", "bob", "--yes")
    assert refused.returncode == 2 and "JDR_TEST_HUB_TOKEN" in refused.stderr, describe(refused)
    assert notes.read_text() == "changed again\n"
