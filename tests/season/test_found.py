"""Bugs the season found while it was built, each reduced to a quick reproduction through the real CLI on a
sandbox hub (file:// and S3). See tests/season/README.md."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.sandbox import Sandbox

pytestmark = pytest.mark.season

NOW = "JDR_NOW"


def test_a_backup_after_prune_keeps_the_archives_kept_runs_reuse(sandbox: Sandbox) -> None:
    """Season day 8: prune dropped the first run; bob's home had not changed since, so every kept run
    referenced bob's archive *in the dropped run's folder*; the next backup's sweep of "runs that never
    completed" deleted it, and every kept run lost bob."""
    sandbox.write_config(retention={"keep_last": 1})
    first = sandbox.jdr_json("backup", env={NOW: "2026-09-25T00:00:00Z"})["run"]
    (sandbox.home("alice") / "new.txt").write_text("changed\n")
    second = sandbox.jdr_json("backup", env={NOW: "2026-09-26T00:00:00Z"})
    reused = [v for v in second["manifest"]["volumes"] if v["reused_from"] == first]
    assert reused, "bob's unchanged home is referenced from the first run"
    pruned = sandbox.jdr_json("prune", env={NOW: "2026-09-26T01:30:00Z"})
    assert pruned["runs_deleted"] == [first]
    (sandbox.home("alice") / "newer.txt").write_text("changed again\n")
    third = sandbox.jdr_json("backup", env={NOW: "2026-09-27T00:00:00Z"})
    assert "cleaned_runs" not in third  # a backup deletes nothing (docs/CREDENTIALS.md)
    assert sandbox.jdr_json("verify")["ok"] is True
    assert {r["id"] for r in sandbox.jdr_json("list")} == {second["run"], third["run"]}


def test_an_injected_clock_behind_the_real_one_still_discards_a_killed_upload(sandbox: Sandbox) -> None:
    """With JDR_NOW in the past, leftovers of a killed upload were never discarded: the sweep compared the
    store's (real) times with the injected clock."""
    env = {NOW: "2026-01-10T02:00:00Z"}
    big = sandbox.home("bob") / "data" / "big.bin"
    big.write_bytes(os.urandom(12 << 20))  # incompressible: the archive is larger than one S3 part
    proc = sandbox.start_jdr("backup", env={**env, "JDR_TEST_PAUSE_AT": "artifact-upload",
                                            "JDR_TEST_PAUSE_AFTER": str(9 << 20)})
    assert proc.stderr is not None
    paused = False
    for line in proc.stderr:
        if line.strip() == "jdr-test-paused-at artifact-upload":
            paused = True
            proc.kill()
            break
    proc.wait(30)
    assert paused, "the backup never reached the pause point"
    assert sandbox.incomplete_uploads() != []
    doc = sandbox.jdr_json("backup", env={NOW: "2026-01-11T02:00:00Z"})
    assert doc["status"] == "complete"
    assert sandbox.incomplete_uploads() != []  # a backup deletes nothing: discarding them is prune's
    sandbox.jdr_json("prune", env={NOW: "2026-01-11T03:30:00Z"})
    assert sandbox.incomplete_uploads() == []
