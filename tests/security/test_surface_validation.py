"""Operator mistakes on ``jdr restore --user`` (docs/SECURITY.md, items 3 and 5): every bad ``--as``,
``--into``, ``--path`` or run is an error (exit 2, with ``--json`` a document naming the problem) found
before anything happens. Driven through the real CLI against a real ``jupyterhub`` whose user has a
running server: the server must still run afterwards, and no home (nor the parent of all homes) may change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dr.errors import UsageError
from dr.policy.restore_plan import check_into, check_paths, check_username
from tests.fixtures.hub import HubProcess
from tests.fixtures.sandbox import Sandbox, describe
from tests.treeutil import snapshot_tree, tree_diff

#: (arguments after ``restore --user bob``, words the error must contain)
BAD_INPUT: list[tuple[tuple[str, ...], str]] = [
    (("--as", ""), "empty user name"),
    (("--as", " "), "empty user name"),
    (("--as", "."), "not a user name"),
    (("--as", ".."), "not a user name"),
    (("--as", "../alice"), "cannot contain '/'"),
    (("--as", "alice/x"), "cannot contain '/'"),
    (("--as", "al\nice"), "control characters"),
    (("--as", "x" * 300), "longer than 255 bytes"),
    (("--as", "nobody-such"), "no such user"),
    (("--into", ""), "empty directory name"),
    (("--into", "/tmp/x"), "absolute"),
    (("--into", "../alice/x"), "'..'"),
    (("--into", "a/../../x"), "'..'"),
    (("--into", ".jdr-restore/x"), "jdr's own"),
    (("--into", "x" * 300), "longer than 255 bytes"),
    (("--into", "notebooks"), "already exists"),
    (("--into", "latest.ipynb/x"), "is a symlink"),
    (("--into", "data/table.csv/x"), "not a directory"),
    (("--path", ""), "empty glob"),
    (("--path", "/"), "empty glob"),
    (("--path", "no-such-file*"), "nothing matches 'no-such-file*'"),
    (("--path", "notebooks", "--path", "nope.txt"), "nothing matches 'nope.txt'"),
    (("--path", "[z-a]"), "malformed path glob"),
    (("--run", "no-such-run"), "no run 'no-such-run'"),
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_bad_input_stops_no_server_and_changes_nothing(
        sandbox: Sandbox, jupyterhub_process: Callable[..., HubProcess]) -> None:
    hub = jupyterhub_process(users=("alice", "bob"))
    sandbox.write_config(deployment={"hub_db": str(hub.db_path)},
                         hub_api={"url": hub.url, "token_env": "JDR_TEST_HUB_TOKEN"})
    sandbox.env["JDR_TEST_HUB_TOKEN"] = hub.token
    sandbox.jdr_json("backup")
    hub.start_server("bob")
    pid = hub.server_pid("bob")
    assert pid and _alive(pid)
    homes = sandbox.home("bob").parent
    before = snapshot_tree(homes)
    keys_before = sandbox.keys()

    for args, words in BAD_INPUT:
        proc = sandbox.run_jdr("--json", "restore", "--user", "bob", "--yes", *args)
        assert proc.returncode == 2, f"{args}: {describe(proc)}"
        doc = json.loads(proc.stdout)
        assert doc["exit_code"] == 2 and words in doc["error"], (args, doc)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert hub.admin_api().is_running("bob"), f"{args} stopped bob's server"
        assert _alive(pid), f"{args} killed bob's server"
        assert tree_diff(before, snapshot_tree(homes)) == [], args
        assert sandbox.keys() == keys_before, args  # not even a lock was taken

    # The same request, well formed, does stop the server and restore: the checks above are not vacuous.
    proc = sandbox.run_jdr("--json", "restore", "--user", "bob", "--yes", "--path", "notebooks")
    assert proc.returncode == 0, describe(proc)
    assert not hub.admin_api().is_running("bob")


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_dry_run_checks_as_much(sandbox: Sandbox) -> None:
    """``--dry-run`` reports the same mistakes (without a Hub API): a plan that would fail is no plan."""
    sandbox.jdr_json("backup")
    for args, words in BAD_INPUT:
        if words == "no such user":
            words = "the hub has no such user"  # found in the hub database, without the Hub API
        proc = sandbox.run_jdr("--json", "restore", "--user", "bob", "--dry-run", *args)
        assert proc.returncode == 2, f"{args}: {describe(proc)}"
        assert words in json.loads(proc.stdout)["error"], args


def test_names_no_shell_can_pass_are_refused_too() -> None:
    """NUL cannot travel in argv; the checks refuse it for callers of the operations."""
    for bad in ("a\0b", "\0"):
        with pytest.raises(UsageError, match="NUL"):
            check_username(bad, "--as")
        with pytest.raises(UsageError):
            check_into(bad)
        with pytest.raises(UsageError, match="NUL"):
            check_paths((bad,))
    check_username("Émile", "--as")  # non-ASCII names are ordinary
    check_into("restored/2026-11-20")
    check_paths(("**/*.ipynb",))
