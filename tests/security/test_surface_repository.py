"""A file:// repository holds every home and the hub database (docs/SECURITY.md, item 10): jdr creates
it private — directories 0700, files 0600 — whatever the umask of the process, and ``jdr verify`` warns
(text and ``--json``, exit code unchanged) about one that group or others may read or write."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.sandbox import JDR, Sandbox, describe


def _modes(root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"dirs": set(), "files": set()}
    for dirpath, _dirs, files in os.walk(root):
        found["dirs"].add(oct(stat.S_IMODE(os.lstat(dirpath).st_mode)))
        for name in files:
            found["files"].add(oct(stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)))
    return found


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_repository_is_private_whatever_the_umask(sandbox: Sandbox, umask: int) -> None:
    root = Path(sandbox.repo_url.removeprefix("file://"))
    assert not root.exists()
    for args in (["backup"], ["backup", "--full"], ["prune"], ["verify"]):
        proc = subprocess.run([JDR, *args], capture_output=True, text=True, env=sandbox.env, umask=umask,
                              timeout=300, check=False)
        assert proc.returncode == 0, describe(proc)
    modes = _modes(root)
    assert len(list(root.rglob("*"))) > 10  # runs, archives, indexes, reports: the walk saw them
    assert modes == {"dirs": {"0o700"}, "files": {"0o600"}}, modes


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_verify_warns_about_a_repository_others_may_read(sandbox: Sandbox) -> None:
    sandbox.jdr_json("backup")
    root = Path(sandbox.repo_url.removeprefix("file://"))
    doc = sandbox.jdr_json("verify")
    assert doc["ok"] is True and doc["warnings"] == []
    assert "warning" not in sandbox.run_jdr("verify").stdout

    manifest = next((root / "runs").iterdir())
    os.chmod(root, 0o755)  # as `mkdir` under the default umask makes it
    os.chmod(manifest, 0o644)
    doc = sandbox.jdr_json("verify")  # a warning, not a problem: exit 0
    assert doc["ok"] is True and len(doc["warnings"]) == 1, doc
    assert "readable or writable by other users" in doc["warnings"][0]
    assert f"{root} (drwxr-xr-x)" in doc["warnings"][0] and "2 directories and files" in doc["warnings"][0]
    proc = sandbox.run_jdr("verify")
    assert proc.returncode == 0 and "warning: the repository is readable" in proc.stdout, describe(proc)

    os.chmod(root, 0o700)
    os.chmod(manifest, 0o660)  # group-writable is as bad
    assert len(json.loads(sandbox.run_jdr("--json", "verify").stdout)["warnings"]) == 1
