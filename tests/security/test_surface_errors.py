"""Errors, not tracebacks (docs/SECURITY.md, item 12): odd input on restore and prune, through the real
CLI. Each is an error with its exit code, a message naming the problem and, with ``--json``, one JSON
document on stdout; never a traceback (exit 1, which would read as "partial"), and nothing written."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.test_local_hostile import archive_of, member, put_run
from tests.fixtures.sandbox import Sandbox, describe
from tests.treeutil import snapshot_tree, tree_diff


def _error_doc(proc: subprocess.CompletedProcess[str], code: int) -> dict[str, object]:
    assert proc.returncode == code, describe(proc)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "jdrtsu-tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_into_on_another_file_system_is_refused_before_anything(sandbox: Sandbox) -> None:
    sandbox.jdr_json("backup")
    home = sandbox.home("bob")
    with tmpfs(home / "scratch-disk"):
        before = snapshot_tree(home)
        proc = sandbox.run_jdr("--json", "restore", "--user", "bob", "--into", "scratch-disk/restored", "--yes")
        doc = _error_doc(proc, 2)
        assert "another file system" in str(doc["error"]) and doc["kind"] == "UsageError", doc
        assert tree_diff(before, snapshot_tree(home)) == []
        assert list((home / "scratch-disk").iterdir()) == []
    # On the home's own file system the same restore works.
    assert sandbox.jdr_json("restore", "--user", "bob", "--into", "restored", "--yes")["status"] == "done"


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_member_name_longer_than_the_file_system_allows(sandbox: Sandbox) -> None:
    """A repository writer (or a home on a file system with longer names) puts a 300-byte name in an
    archive: the restore fails for that user with the name's problem, exit 3, the home as it was."""
    first = sandbox.jdr_json("backup")["manifest"]
    repo = sandbox.repo()
    base = repo.load_manifest(first["run"])
    archive, index = archive_of(member(".", tarfile.DIRTYPE), member("ok.txt", data=b"fine\n"),
                                member("n" * 300, data=b"too long a name\n"))
    run = put_run(repo, base, "bob", archive, index)
    home = sandbox.home("bob")
    before = snapshot_tree(home)
    proc = sandbox.run_jdr("--json", "restore", "--user", "bob", "--run", run, "--yes")
    doc = _error_doc(proc, 3)
    (item,) = doc["items"]  # type: ignore[misc]
    assert doc["status"] == "failed" and item["status"] == "failed", doc
    assert "name too long" in item["error"].lower(), item
    assert tree_diff(before, snapshot_tree(home)) == []

    # The same name as --into is refused before anything, exit 2.
    doc = _error_doc(sandbox.run_jdr("--json", "restore", "--user", "bob", "--into", "n" * 300, "--yes"), 2)
    assert "longer than 255 bytes" in str(doc["error"])


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
@pytest.mark.parametrize("value", ["99999999999d", "99999999999y", "99999999999999999999h",
                                   "9999999999999999999999999999w", "1001y", "0d", "-1d", "7 days"])
def test_absurd_retention_is_a_configuration_error(sandbox: Sandbox, value: str) -> None:
    sandbox.jdr_json("backup")
    keys = sandbox.keys()
    for args in (("prune", "--dry-run"), ("prune",)):
        doc = _error_doc(sandbox.run_jdr("--json", *args, env={"JDR_RETENTION_KEEP_WITHIN": value}), 2)
        assert doc["kind"] == "ConfigError" and "retention.keep_within" in str(doc["error"]), doc
    assert sandbox.keys() == keys
    sandbox.write_config(retention={"keep_within": 99999999999})  # a bare number in YAML means days
    doc = _error_doc(sandbox.run_jdr("--json", "prune"), 2)
    assert "duration too long" in str(doc["error"]), doc
    sandbox.write_config(retention={"keep_within": "1000y", "keep_daily": 99999999999})  # long, but fine
    assert sandbox.jdr_json("prune", "--dry-run")["decisions"]


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_unreadable_configuration(sandbox: Sandbox, tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00repository: x\n")
    for config, words in ((binary, "not UTF-8"), (tmp_path, "Is a directory"),
                          (tmp_path / "missing.yaml", "No such file")):
        for args in (("restore", "--user", "bob", "--yes"), ("prune",), ("verify",)):
            doc = _error_doc(sandbox.run_jdr("--json", "--config", str(config), *args), 2)
            assert words in str(doc["error"]) and doc["kind"] == "ConfigError", (config, args, doc)


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_odd_selections_are_usage_errors_in_bounded_time(sandbox: Sandbox) -> None:
    """An unset variable as --run, a malformed glob for ``jdr ls``, and globs that made the old regular
    expressions backtrack for minutes (``*****…x``, many ``**``): each answers at once, exit 2."""
    run = sandbox.jdr_json("backup")["run"]
    doc = _error_doc(sandbox.run_jdr("--json", "restore", "--user", "bob", "--run", "", "--yes"), 2)
    assert "empty run id" in str(doc["error"]), doc
    doc = _error_doc(sandbox.run_jdr("--json", "ls", run, "--user", "bob", "[z-a]"), 2)
    assert "malformed path glob" in str(doc["error"]), doc
    for glob in ("*" * 40 + "x", "*a" * 30 + "q", "/".join(["**", "n*"] * 15) + "/q"):
        proc = sandbox.run_jdr("--json", "restore", "--user", "bob", "--dry-run", "--path", glob, timeout=60)
        doc = _error_doc(proc, 2)
        assert "nothing matches" in str(doc["error"]), doc
    # The rewritten matching still selects what it should.
    plan = sandbox.jdr_json("restore", "--user", "bob", "--dry-run", "--path", "**/**/*o*e*.txt")
    assert plan["plan"]["volumes"][0]["paths"] == ["**/**/*o*e*.txt"]
    names = [e["path"] for e in sandbox.jdr_json("ls", run, "--user", "bob", "**/n*t*s.t?t")["entries"]]
    assert names == ["notebooks/notes.txt"], names


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_malformed_urls_in_the_configuration(sandbox: Sandbox) -> None:
    sandbox.jdr_json("backup")
    cases = [({"JDR_HUB_API_URL": "http://[::1", "JDR_HUB_TOKEN": "x"}, "hub_api.url: not a URL"),
             ({"JDR_HUB_API_URL": "http://hub:port/hub/api", "JDR_HUB_TOKEN": "x"}, "hub_api.url: not a URL"),
             ({"JDR_HUB_API_URL": "hub:8081", "JDR_HUB_TOKEN": "x"}, "must be an http(s) URL"),
             ({"JDR_CATALOG_URL": "bogus://x"}, "catalog.url: cannot use")]
    for env, words in cases:
        args = ("restore", "--user", "bob", "--yes") if "JDR_HUB_API_URL" in env else ("list",)
        doc = _error_doc(sandbox.run_jdr("--json", *args, env=env), 2)
        assert words in str(doc["error"]) and doc["kind"] == "ConfigError", (env, doc)
