"""Restoring one user's backup as another (docs/SECURITY.md, item 3), as root with real Linux users.

alice's home holds what homes hold — her files, a root-owned file an administrator locked, a file of a
third user, a setuid program. ``jdr restore --user A --as B`` must leave B's home owned by B: every
owner but root becomes B's uid and gid (the third user gets no foothold in B's home), root-owned entries
stay root's, no setuid/setgid bit survives, and nothing of A's uid remains. A's own restore keeps the
archive's owners exactly. And an ``--as`` user without a home is refused before anything is done.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.hub import build_hub_db
from tests.fixtures.sandbox import JDR
from tests.treeutil import snapshot_tree, tree_diff

NOBODY = pwd.getpwnam("nobody")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def _useradd(name: str) -> User:
    subprocess.run(["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


@pytest.fixture
def two_users() -> Iterator[tuple[User, User]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create users and restore ownership")
    tag = secrets.token_hex(2)
    made: list[User] = []
    try:
        made.append(_useradd(f"jdrtsu{tag}a"))
        made.append(_useradd(f"jdrtsu{tag}b"))
        yield made[0], made[1]
    finally:
        for u in made:
            subprocess.run(["userdel", u.name], check=False, capture_output=True)
            subprocess.run(["groupdel", u.name], check=False, capture_output=True)


class Hub:
    def __init__(self, root: Path, users: list[str]) -> None:
        self.root = root
        self.db = build_hub_db(root / "hub" / "jupyterhub.sqlite", users)
        self.homes = root / "home"
        self.homes.mkdir()
        config = root / "jdr.yaml"
        config.write_text(yaml.safe_dump({
            "deployment": {"kind": "local", "hub_db": str(self.db), "homes": f"{self.homes}/{{username}}"},
            "repository": f"file://{root / 'repo'}"}))
        self.env = {**os.environ, "JDR_CONFIG": str(config), "XDG_CACHE_HOME": str(root / "cache")}

    def jdr(self, *args: str, code: int = 0) -> dict[str, object]:
        proc = subprocess.run([JDR, "--json", *args], capture_output=True, text=True, env=self.env,
                              timeout=300, check=False)
        assert proc.returncode == code, f"jdr {args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        doc: dict[str, object] = json.loads(proc.stdout)
        return doc


def _own(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)


def _home_of_a(home: Path, a: User) -> None:
    (home / "notebooks").mkdir(parents=True)
    (home / "notebooks" / "analysis.ipynb").write_text('{"cells": []}')
    (home / "admin-lock.txt").write_text("set by the administrator\n")  # root-owned, stays root's
    (home / "from-nobody.txt").write_text("a third user's file\n")
    (home / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.symlink("notebooks/analysis.ipynb", home / "latest")
    (home / "shared-group").mkdir()
    for p in (home, home / "notebooks", home / "notebooks" / "analysis.ipynb", home / "tool", home / "latest"):
        _own(p, a.uid, a.gid)
    _own(home / "from-nobody.txt", NOBODY.pw_uid, NOBODY.pw_gid)
    _own(home / "shared-group", a.uid, NOBODY.pw_gid)
    os.chmod(home / "tool", 0o6755)  # setuid and setgid, owned by a
    os.chmod(home / "shared-group", 0o2770)


def test_restore_as_another_user_maps_ownership(tmp_path: Path, two_users: tuple[User, User]) -> None:
    a, b = two_users
    hub = Hub(tmp_path, [a.name, b.name])
    home_a, home_b = hub.homes / a.name, hub.homes / b.name
    _home_of_a(home_a, a)
    home_b.mkdir()
    (home_b / "b-notes.txt").write_text("b's own\n")
    _own(home_b, b.uid, b.gid)
    _own(home_b / "b-notes.txt", b.uid, b.gid)
    os.chmod(home_b, 0o750)
    hub.jdr("backup")
    a_before = snapshot_tree(home_a)

    doc = hub.jdr("restore", "--user", a.name, "--as", b.name, "--yes")
    assert doc["status"] == "done", doc
    restored = snapshot_tree(home_b)
    owners = {p: (e["uid"], e["gid"]) for p, e in restored.items()}
    assert owners[b"."] == (b.uid, b.gid)  # the home itself stays b's
    assert owners[b"admin-lock.txt"] == (0, 0)  # root's stays root's
    for path in (b"notebooks", b"notebooks/analysis.ipynb", b"tool", b"latest", b"from-nobody.txt"):
        assert owners[path] == (b.uid, b.gid), (path, owners[path])
    assert owners[b"shared-group"] == (b.uid, b.gid)  # a third group gets nothing in b's home either
    assert not any(uid == a.uid or gid == a.gid for uid, gid in owners.values()), owners
    assert not any(e["mode"] & (stat.S_ISUID | stat.S_ISGID) for p, e in restored.items()
                   if e["type"] == "file"), {p: oct(e["mode"]) for p, e in restored.items()}
    assert (home_b / "notebooks" / "analysis.ipynb").read_text() == '{"cells": []}'
    assert tree_diff(a_before, snapshot_tree(home_a)) == []  # the source home is not touched

    # A's own restore keeps the archive's owners exactly (setuid/setgid cleared all the same).
    (home_a / "notebooks" / "analysis.ipynb").write_text("changed")
    assert hub.jdr("restore", "--user", a.name, "--yes")["status"] == "done"
    again = snapshot_tree(home_a)
    assert again[b"from-nobody.txt"]["uid"] == NOBODY.pw_uid
    assert again[b"notebooks/analysis.ipynb"]["uid"] == a.uid
    assert again[b"admin-lock.txt"]["uid"] == 0
    assert again[b"tool"]["mode"] == 0o755


def test_restore_as_a_user_without_a_home_is_refused(tmp_path: Path, two_users: tuple[User, User]) -> None:
    a, b = two_users
    hub = Hub(tmp_path, [a.name, b.name])
    _home_of_a(hub.homes / a.name, a)
    hub.jdr("backup")
    before = snapshot_tree(hub.homes)
    doc = hub.jdr("restore", "--user", a.name, "--as", b.name, "--yes", code=2)
    assert "does not exist" in str(doc["error"]) and b.name in str(doc["error"]), doc
    doc = hub.jdr("restore", "--user", a.name, "--as", "jdrtsu-nobody", "--yes", code=2)
    assert "no such user" in str(doc["error"]), doc
    assert tree_diff(before, snapshot_tree(hub.homes)) == []
    assert not (hub.homes / b.name).exists()
