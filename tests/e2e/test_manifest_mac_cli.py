"""Tamper evidence through the CLI (docs/SECURITY.md, "Tamper evidence"): a run written by someone who
can write to the repository but does not hold the MAC key is refused by restore and drill and flagged by
verify; runs made before MACs need --allow-unsigned; a legit run
restores; list and show still work and say what verifies.

The attacker acts through the store only (what a stolen backup credential allows)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from dr.repository import layout
from tests.fixtures.sandbox import Sandbox, describe
from tests.treeutil import snapshot_tree, tree_diff


def test_forged_stripped_and_altered_runs_are_refused_and_a_legit_one_restores(
        make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    # file:// only: the same checks on the real S3 server are in tests/contract/test_manifest_mac_repository.py
    sb = make_sandbox(f"file://{tmp_path / 'repo'}")
    key_file = sb.root / "mac.key"
    made = sb.jdr_json("key", "mac-generate", str(key_file))
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and made["key"] in key_file.read_text()

    old = sb.jdr_json("backup")["run"]  # before MACs were configured: unsigned
    sb.write_config(encryption={"mac_key_file": str(key_file)})
    good = sb.jdr_json("backup")["run"]
    store = sb.store()
    doc = json.loads(store.get(layout.manifest_key(good)))
    assert doc["mac"]["key"] == made["key"]
    # Nothing of the unsigned run was taken over by the signed one: it read every volume afresh.
    assert all(v["reused_from"] is None for v in doc["volumes"])

    # verify: the legit run verifies; the unsigned one is a problem, accepted with --allow-unsigned.
    assert sb.jdr_json("verify", good)["ok"]
    v = sb.jdr_json("verify", code=1)
    assert [u["run"] for u in v["unverified"]] == [old] and any("carries no MAC" in p for p in v["problems"])
    assert sb.jdr_json("verify", "--allow-unsigned")["ok"]
    proc = sb.run_jdr("restore", "--user", "bob", "--run", old, "--yes")
    assert proc.returncode == 3 and "--allow-unsigned" in proc.stderr, describe(proc)

    # The attacker writes a newer run: the good manifest with alice's archive and index replaced by bob's
    # (real archives of the repository, so every size and SHA-256 matches what they name).
    alice_home = sb.home("alice")
    before = snapshot_tree(alice_home)
    forged = json.loads(json.dumps(doc))
    evil = good[:-6] + "ffffff"
    forged["run"] = evil
    alice = next(x for x in forged["volumes"] if x["user"] == "alice")
    bob = next(x for x in forged["volumes"] if x["user"] == "bob")
    alice["archive"], alice["index"] = bob["archive"], bob["index"]
    store.put(layout.manifest_key(evil), json.dumps(forged).encode())

    for args in (("restore", "--user", "alice", "--yes"), ("restore", "--all", "--yes"), ("drill",)):
        err = sb.jdr_json(*args, code=3)
        assert err["kind"] == "TamperError" and "does not match its MAC" in err["error"], (args, err)
    assert sb.jdr_json("restore", "--user", "alice", "--yes", "--allow-unsigned", code=3)["kind"] == "TamperError"
    v = sb.jdr_json("verify", "--allow-unsigned", code=1)
    assert {u["run"]: u["authenticity"] for u in v["unverified"]} == {evil: "invalid", old: "unsigned"}

    # Stripping the MAC does not help: unsigned runs are refused while a key is configured.
    del forged["mac"]
    store.put(layout.manifest_key(evil), json.dumps(forged).encode())
    err = sb.jdr_json("restore", "--user", "alice", "--yes", code=3)
    assert "carries no MAC" in err["error"] and "--allow-unsigned" in err["hint"]
    # (The operator's explicit override is what lets it through.)
    assert sb.jdr_json("restore", "--user", "alice", "--yes", "--dry-run", "--allow-unsigned")["status"] == "dry-run"

    # list and show still work, and show says what verifies.
    assert [r["id"] for r in sb.jdr_json("list")] == [evil, good, old]
    assert sb.jdr_json("show", evil)["authenticity"]["status"] == "unsigned"
    assert sb.jdr_json("show", good)["authenticity"] == {"status": "verified", "key": made["key"]}
    text = sb.run_jdr("show", evil).stdout
    assert "NOT AUTHENTICATED (unsigned)" in text
    assert tree_diff(before, snapshot_tree(alice_home)) == []  # nothing was restored over alice's home

    # An artifact of the good run replaced by other bytes of the same size: refused while reading.
    store.delete(layout.manifest_key(evil))
    art = next(x for x in doc["volumes"] if x["user"] == "alice")["archive"]
    data = store.get(art["key"])
    store.put(art["key"], data[:-64] + bytes(b ^ 0x55 for b in data[-64:]))
    proc = sb.run_jdr("--json", "restore", "--user", "alice", "--run", good, "--yes")
    # (zstd's own frame checksum may notice first; either way nothing is swapped in)
    assert proc.returncode == 3 and ("SHA-256" in proc.stdout or "corrupt" in proc.stdout), describe(proc)
    assert tree_diff(before, snapshot_tree(alice_home)) == []
    assert any("SHA-256" in p for p in sb.jdr_json("verify", good, code=1)["problems"])

    # The legit run restores what it holds intact.
    (sb.home("bob") / "notebooks" / "notes.txt").write_text("overwritten\n")
    assert sb.jdr_json("restore", "--user", "bob", "--run", good, "--yes")["status"] == "done"
    assert (sb.home("bob") / "notebooks" / "notes.txt").read_text() == "notes of bob\n"

    # Rotation: a new key file keeping the old key; runs signed by the old key still verify.
    rotated = sb.root / "mac2.key"
    new = sb.jdr_json("key", "mac-generate", str(rotated), "--keep", str(key_file))
    assert new["keys"] == [new["key"], made["key"]] and new["key"] != made["key"]
    sb.write_config(encryption={"mac_key_file": str(rotated)})
    assert sb.jdr_json("show", good)["authenticity"] == {"status": "verified", "key": made["key"]}
    assert sb.jdr_json("restore", "--user", "bob", "--run", good, "--yes", "--dry-run")["status"] == "dry-run"
