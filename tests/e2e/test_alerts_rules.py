"""docs/alerts.yaml, evaluated by the real promtool on the series that real ``jdr backup``, ``jdr prune``,
``jdr drill`` and ``jdr copy`` wrote into node_exporter textfiles: every alert fires exactly on the simulated days something
was wrong, and on no other (a prune never makes "no successful backup" fire, a drill is overdue only after
100 days)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tests.fixtures.promtool import ALERTS_YAML, SeriesRecorder, Timeline, check_rules, firing_alerts, names
from tests.fixtures.sandbox import Sandbox, describe, small_home

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
H = 3600
D = 86400


def test_alert_rules_are_valid(promtool: str) -> None:
    proc = check_rules(ALERTS_YAML)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


class Season:
    """Runs real commands at simulated times and records the textfiles after each."""

    def __init__(self, sb: Sandbox, textfiles: Path) -> None:
        self.sb, self.textfiles = sb, textfiles
        self.timeline = Timeline()
        self.recorder = SeriesRecorder(self.timeline, interval=240, evaluation_interval=H)

    def run(self, sim: float, *args: str, code: int = 0) -> dict[Any, float]:
        self.timeline.at(sim)
        proc = self.sb.run_jdr(*args)
        assert proc.returncode == code, f"jdr {' '.join(args)} exited {proc.returncode}\n{describe(proc)}"
        return self.recorder.snapshot(self.timeline.to_sim(time.time()), self.textfiles)


def test_alerts_fire_exactly_on_the_bad_days(make_sandbox: Any, tmp_path: Path, promtool: str) -> None:
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    textfiles = tmp_path / "textfile"
    sb.write_config(metrics={"textfile_dir": str(textfiles)}, retention={"keep_last": 3},
                    copy={"to": f"file://{tmp_path / 'second'}"})
    s = Season(sb, textfiles)
    for user in sb.users:  # the drill checks notebooks: make them valid ones
        (sb.home(user) / "notebooks" / "work.ipynb").write_text(NOTEBOOK)

    # Day 0: a complete backup, a drill that passes, a prune.
    s.run(0, "backup")
    s.run(10 * 60, "drill")
    backup_file = (textfiles / "jdr_backup.prom").read_bytes()
    after_prune = s.run(1 * H, "prune")
    assert (textfiles / "jdr_backup.prom").read_bytes() == backup_file  # a prune leaves backup metrics alone
    assert sorted(p.name for p in textfiles.iterdir()) == [
        "jdr_backup.prom", "jdr_drill.prom", "jdr_prune.prom", "jdr_repository.prom"]
    runs = after_prune[("jdr_repository_runs", frozenset())]
    assert runs == 1 and after_prune[("jdr_repository_size_bytes", frozenset())] > 0
    copied = s.run(1.5 * H, "copy")  # the second repository brought up to date
    assert copied[("jdr_copy_runs_missing", frozenset())] == 0
    # Day 1: complete backup, then a prune at 03:00 and a copy; then no copy until day 5.
    s.run(1 * D, "backup")
    s.run(1 * D + H, "prune")
    s.run(1 * D + 1.5 * H, "copy")
    # Day 2: the machine was down, no backup at all.
    # Day 3 and 4: dave's home cannot be read: partial runs.
    shutil.rmtree(sb.home("dave"))
    sb.home("dave").write_text("not a directory\n")
    s.run(3 * D, "backup", code=1)
    s.run(4 * D, "backup", code=1)
    # Day 5: fixed, complete. Then another process holds the lock: the 03:00 backup fails.
    sb.home("dave").unlink()
    small_home(sb.home("dave"), "dave")
    (sb.home("dave") / "notebooks" / "work.ipynb").write_text(NOTEBOOK)
    s.run(5 * D, "backup")
    with sb.repo().lock("restore", exclusive=True):
        failed = s.run(5 * D + 2 * H, "backup", code=3)
        s.run(5 * D + 2.5 * H, "copy", code=3)
    assert failed[("jdr_backup_last_status", frozenset({("status", "failed")}))] == 1
    assert ("jdr_backup_last_success_timestamp_seconds", frozenset()) in failed  # read from the repository
    # Day 6: complete again, and copied.
    s.run(6 * D, "backup")
    s.run(6 * D + 0.5 * H, "copy")
    # Day 50: an archive went bad; the drill finds it and fails.
    store = sb.store()
    for obj in store.list("data/"):
        if "/volumes/" in obj.key and obj.key.endswith(".tar.zst"):
            path = Path(str(tmp_path / "repo")) / obj.key
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
    s.run(50 * D, "drill", code=1)
    # Day 51: verify finds and records the damage: the repository alert fires until a prune drops the run.
    verified = s.run(51 * D, "verify", code=1)
    assert verified[("jdr_repository_damaged_artifacts", frozenset())] >= 1

    expected: dict[float, set[str]] = {
        2 * H: set(),                                   # after the prune: nothing
        1 * D + 2 * H: set(),                           # after the second prune
        2 * D + 1 * H: set(),                           # 25 h after day 1's backup
        2 * D + 3 * H: {"JdrNoSuccessfulBackup"},       # 27 h after it (25.5 h after the copy)
        3 * D + 1 * H: {"JdrNoSuccessfulBackup", "JdrBackupPartial", "JdrCopyOverdue"},
        4 * D + 1 * H: {"JdrNoSuccessfulBackup", "JdrBackupPartial", "JdrUserBackupFailing", "JdrCopyOverdue"},
        5 * D + 1 * H: {"JdrCopyOverdue"},
        5 * D + 3 * H: {"JdrBackupFailed", "JdrCopyFailed", "JdrCopyOverdue"},
        6 * D + 1 * H: set(),
        7 * D + 1 * H: set(),                           # 25 h: not yet
        49 * D: {"JdrNoSuccessfulBackup", "JdrCopyOverdue"},
        50 * D + 1 * H: {"JdrNoSuccessfulBackup", "JdrDrillFailed", "JdrCopyOverdue"},
        51 * D + 1 * H: {"JdrNoSuccessfulBackup", "JdrDrillFailed", "JdrRepositoryDamaged", "JdrCopyOverdue"},
        # new damage is a day's alert, not months of one (the record stays while a kept run names it)
        52 * D + 1 * H: {"JdrNoSuccessfulBackup", "JdrDrillFailed", "JdrCopyOverdue"},
        99 * D: {"JdrNoSuccessfulBackup", "JdrDrillFailed", "JdrCopyOverdue"},
        101 * D: {"JdrNoSuccessfulBackup", "JdrDrillFailed", "JdrDrillOverdue", "JdrCopyOverdue"},
    }
    t0 = time.monotonic()
    fired = firing_alerts(s.recorder, expected, workdir=tmp_path)
    print(f"promtool evaluated {max(expected) / D:.0f} simulated days in {time.monotonic() - t0:.1f}s")
    got = {t: names(a) for t, a in fired.items()}
    assert got == expected
    failing = [dict(labels) for name, labels in fired[4 * D + 1 * H] if name == "JdrUserBackupFailing"]
    assert failing == [{"user": "dave", "severity": "warning"}]  # an empty label is no label in Prometheus
