"""Bad configuration and bad arguments, through the real CLI: exit code 2 and a message naming the problem.

Documented behaviour checked here as well: a user whose server the hub DB says is running is refused a
restore (exit 3, "nothing could be done": the refusal is about the deployment's state, not the command
line) unless ``--force``; see tests/e2e/test_local_servers.py for the Hub API path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.sandbox import Sandbox, describe

CONFIG_ERRORS = {
    "unknown key": ("deployment:\n  kind: local\n  hub_db: /x\n  homes: /h/{username}\n  hom: /y\n"
                    "repository: {repo}\n", "deployment.hom: unknown key"),
    "unknown top-level key": ("repository: {repo}\nretension: {keep_last: 1}\n", "retension: unknown key"),
    "wrong type": ("repository: {repo}\nretention: {keep_daily: seven}\n",
                   "retention.keep_daily: expected an integer"),
    "wrong type of section": ("repository: {repo}\nretention: [1, 2]\n", "retention: expected a mapping"),
    "malformed YAML": ("repository: [{repo}\n", "not valid YAML"),
    "not a mapping": ("- a\n- b\n", "top level must be a mapping"),
    "bad repository URL": ("repository: ftp://host/path\n", "neither s3://bucket/prefix nor file:///path"),
    "bucketless S3 URL": ("repository: s3:///prefix\n", "s3://bucket/prefix"),
    "no repository": ("deployment: {kind: local}\n", "repository: required"),
    "bad choice": ("repository: {repo}\ndeployment: {kind: docker}\n", "deployment.kind: 'docker'"),
    "homes without {username}": ("repository: {repo}\ndeployment: {kind: local, hub_db: /x, homes: /h}\n",
                                 "deployment.homes: must contain {username}"),
}


@pytest.fixture
def file_sandbox(make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> Sandbox:
    return make_sandbox(f"file://{tmp_path / 'repo'}")


def assert_usage_error(proc: object, *needles: str) -> None:
    assert proc.returncode == 2, describe(proc)  # type: ignore[attr-defined]
    err = proc.stderr  # type: ignore[attr-defined]
    assert ("jdr: error:" in err or "Error:" in err) and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_bad_configuration(file_sandbox: Sandbox, case: str) -> None:
    text, needle = CONFIG_ERRORS[case]
    file_sandbox.config.write_text(text.replace("{repo}", file_sandbox.repo_url))
    assert_usage_error(file_sandbox.run_jdr("backup"), needle)


def test_missing_config_and_bad_environment(file_sandbox: Sandbox) -> None:
    sb = file_sandbox
    assert_usage_error(sb.run_jdr("list", env={"JDR_CONFIG": str(sb.root / "nope.yaml")}),
                       "cannot read configuration", "nope.yaml")
    assert_usage_error(sb.run_jdr("--config", str(sb.root / "nope.yaml"), "list"), "nope.yaml")
    assert_usage_error(sb.run_jdr("list", env={"JDR_RETENTION_KEEP_DAILY": "many"}),
                       "retention.keep_daily: expected an integer")
    # --json: the error is a JSON document too.
    proc = sb.run_jdr("--json", "list", env={"JDR_CONFIG": str(sb.root / "nope.yaml")})
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 2 and "nope.yaml" in doc["error"] and doc["kind"] == "ConfigError"


def test_bad_arguments(file_sandbox: Sandbox) -> None:
    sb = file_sandbox
    assert_usage_error(sb.run_jdr("show", "latest"), "no jdr repository")  # nothing backed up yet
    run = sb.jdr_json("backup")["run"]

    assert_usage_error(sb.run_jdr("backup", "--user", "nobody"), "unknown user 'nobody'")
    assert sb.jdr_json("list") == [{**sb.jdr_json("list")[0]}] and len(sb.jdr_json("list")) == 1  # no new run
    assert_usage_error(sb.run_jdr("restore", "--user", "nobody", "--yes"), "no volume of user 'nobody'")
    assert_usage_error(sb.run_jdr("ls", "latest", "--user", "nobody"), "nobody")
    assert_usage_error(sb.run_jdr("show", "20200101T000000Z-abcdef"), "no run '20200101T000000Z-abcdef'")
    assert_usage_error(sb.run_jdr("restore", "--user", "bob", "--run", "nosuchrun", "--yes"), "no run 'nosuchrun'")
    assert_usage_error(sb.run_jdr("verify", "nosuchrun"), "no run 'nosuchrun'")
    assert_usage_error(sb.run_jdr("restore", "--user", "bob", "--at", "yesterday", "--yes"),
                       "--at", "not an ISO-8601 time: 'yesterday'")
    assert_usage_error(sb.run_jdr("restore", "--user", "bob", "--run", run, "--at", "2026-01-01", "--yes"),
                       "--run and --at cannot be used together")
    assert_usage_error(sb.run_jdr("restore", "--yes"), "exactly one of --user NAME, --hub, --all")
    assert_usage_error(sb.run_jdr("restore", "--user", "bob", "--hub", "--yes"), "exactly one of")
    assert_usage_error(sb.run_jdr("restore", "--hub", "--path", "x", "--yes"), "--path, --into and --as go with --user")
    assert_usage_error(sb.run_jdr("restore", "--user", "bob", "--into", "../escape", "--yes"), "--into")
    assert_usage_error(sb.run_jdr("backup", "--method", "teleport"), "teleport")
    assert_usage_error(sb.run_jdr("frobnicate"), "No such command")  # click's own usage error
    assert sb.run_jdr("frobnicate").stderr.count("Traceback") == 0


def test_a_running_server_without_hub_api_is_refused_unless_forced(file_sandbox: Sandbox) -> None:
    sb = file_sandbox
    sb.jdr_json("backup")
    home = sb.home("dave")
    (home / "notebooks" / "notes.txt").write_text("dave is working on this right now\n")
    proc = sb.run_jdr("restore", "--user", "dave", "--yes")
    assert proc.returncode == 3, describe(proc)
    assert "dave's server is running" in proc.stderr and "--force" in proc.stderr
    assert (home / "notebooks" / "notes.txt").read_text() == "dave is working on this right now\n"
    assert not (home / ".jdr-restore").exists()
    forced = sb.jdr_json("restore", "--user", "dave", "--yes", "--force")
    assert forced["status"] == "done"
    assert (home / "notebooks" / "notes.txt").read_text() == "notes of dave\n"
