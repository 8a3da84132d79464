"""What must hold after every simulated day, checked against the season's own record of the truth (the
:class:`Ledger`: what every home held when each run was taken), never against jdr's idea of it.

- :func:`listed_runs_are_the_committed_ones` — ``jdr list`` shows exactly the runs that committed and that
  retention has not dropped, with the status each had.
- :func:`every_artifact_is_whole` — ``jdr verify`` reads every artifact of every run (size, SHA-256):
  nothing a run references is missing or damaged; no lock and no incomplete upload is left behind.
- :func:`run_restores_exactly` — ``jdr restore --all --run R`` on a new machine (an empty hub DB path, an
  empty homes directory mounted at production's path, the same repository, and only one of the keys R
  lists) gives, entry by entry (type, mode, owner, mtime, content, link targets, hard links), the homes
  and orphan homes the ledger recorded when R was taken, no home for a user who had none, and a hub
  database holding the users the hub had then.
- :func:`retention_holds` — after prune, the runs kept are exactly those the retention policy implies
  (computed here, independently of dr.policy), and the repository holds exactly the artifacts they
  reference: its size is what retention implies, nothing leaks.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import yaml

from dr.model import volume_label
from dr.repository import layout
from dr.repository.damage import damage_key
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.repository.s3 import S3Store
from dr.repository.store import Store
from tests.fixtures.sandbox import Sandbox
from tests.season.operator import Operator
from tests.season.world import Tree, home_tree
from tests.treeutil import tree_diff


@dataclass
class RunRecord:
    run: str
    started: datetime
    status: str
    homes: dict[str, Tree]
    hub_users: list[str]
    day: int
    keys: set[str] = field(default_factory=set)  # fingerprints of the keys that open every artifact
    volumes: dict[str, set[str]] = field(default_factory=dict)  # label -> keys of its artifacts


@dataclass
class Ledger:
    """Every run the season saw committed, and which of them retention has dropped since."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    damaged: set[str] = field(default_factory=set)  # artifact keys the season damaged in the repository

    def damaged_in(self, record: RunRecord) -> set[str]:
        """Labels of the volumes of ``record`` whose artifacts the season damaged."""
        return {label for label, keys in record.volumes.items() if keys & self.damaged}

    def alive(self) -> list[RunRecord]:
        return sorted((r for r in self.runs.values() if r.run not in self.dropped),
                      key=lambda r: r.run, reverse=True)


def listed_runs_are_the_committed_ones(op: Operator, ledger: Ledger, now: datetime) -> list[dict[str, Any]]:
    listed = op.run(now, "list").doc
    assert {r["id"]: r["status"] for r in listed} == {r.run: r.status for r in ledger.alive()}, \
        f"jdr list: {[(r['id'], r['status']) for r in listed]}\nledger: {[(r.run, r.status) for r in ledger.alive()]}"
    return list(listed)


def keys(store: Store, prefix: str) -> list[str]:
    return [o.key for o in store.list(prefix)]


def incomplete_uploads(store: Store) -> list[str]:
    """Uploads started and never committed: S3 multipart uploads, or files under ``.incomplete/``."""
    if isinstance(store, S3Store):
        return sorted(k for k, _ in store.incomplete_uploads())
    assert isinstance(store, FileStore)
    d = store.root / ".incomplete"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def every_artifact_is_whole(op: Operator, store: Store, ledger: Ledger, now: datetime) -> None:
    """``jdr verify`` finds every artifact whole, but exactly the ones the season damaged that a listed run
    still names (each reported, and recorded in ``damage/``); no lock and no incomplete upload remains."""
    named = {k for r in ledger.alive() for keys in r.volumes.values() for k in keys}
    expected = ledger.damaged & named
    out = op.run(now, "verify", expect=None)
    doc = out.doc
    if not expected:
        assert out.code == 0 and doc["ok"] is True, out
    else:
        assert out.code != 0 and doc["ok"] is False, out
        assert {d["key"] for d in doc["damaged"]} == expected, doc["damaged"]
        assert {damage_key(k) for k in expected} <= set(keys(store, "damage/")), keys(store, "damage/")
        assert doc["next_steps"], doc
    assert keys(store, layout.LOCKS) == [], f"locks left behind: {keys(store, layout.LOCKS)}"
    assert incomplete_uploads(store) == [], f"incomplete uploads left behind: {incomplete_uploads(store)}"


def dr_config(sb: Sandbox, place: Path, key_file: Path, fresh_hub: Path) -> Path:
    """A configuration for a new machine: a freshly installed hub (``fresh_hub``: its database, without
    users) at ``place``, the homes at the same paths as in production (``place/home`` is bind-mounted
    there while it restores), same repository and catalog cache, and only ``key_file`` to decrypt."""
    hub_db = place / "hub" / "jupyterhub.sqlite"
    hub_db.parent.mkdir(parents=True)
    shutil.copyfile(fresh_hub, hub_db)
    deployment = {**sb.settings["deployment"], "hub_db": str(hub_db)}
    doc = {**sb.settings, "deployment": deployment, "encryption": {"key_file": str(key_file)}}
    (place / "home").mkdir(parents=True)
    path = place / "jdr.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@contextlib.contextmanager
def new_machine(sb: Sandbox, place: Path) -> Iterator[Path]:
    """The homes directory of ``place`` mounted over production's (same paths, as on a rebuilt machine);
    production's is back when the context ends. Yields the homes directory."""
    homes = sb.root / "home"
    subprocess.run(["mount", "--bind", str(place / "home"), str(homes)], check=True)
    try:
        yield homes
    finally:
        subprocess.run(["umount", str(homes)], check=True)


def run_restores_exactly(op: Operator, sb: Sandbox, record: RunRecord, place: Path, now: datetime,
                         key_file: Path, fresh_hub: Path, damaged: set[str]) -> None:
    """``jdr restore --all --run R`` on a new machine holding only ``key_file`` gives what R recorded, but
    for the volumes labelled ``damaged``, which it must refuse."""
    config = dr_config(sb, place, key_file, fresh_hub)
    try:
        with new_machine(sb, place) as homes:
            out = op.run(now, "restore", "--all", "--run", record.run, "--yes", config=config, expect=None)
            doc = out.doc
            items = {i["label"]: i for i in doc["items"]}
            assert sorted(items) == sorted(record.homes), (record.run, sorted(items), sorted(record.homes))
            # A volume whose archive was damaged is refused (its checksum), the others restore exactly.
            refused = {label for label, i in items.items() if i["status"] != "ok"}
            assert refused == damaged, (record.run, refused, damaged, out)
            assert doc["status"] == ("done" if not damaged else "partial") and out.code == (1 if damaged else 0), out
            restored = {label: i for label, i in items.items() if label not in damaged}
            on_disk = sorted(d.name for d in homes.iterdir() if any((homes / d.name).iterdir()))
            assert on_disk == sorted(Path(restored[label]["target"]).name for label in restored), on_disk
            for label, recorded in record.homes.items():
                if label in damaged:
                    continue
                want = as_restored(recorded)
                got = home_tree(Path(restored[label]["target"]))
                assert got == want, (f"run {record.run} (day {record.day}): {label} restores differently:\n"
                                     + "\n".join(tree_diff(want, got)[:30]))
        conn = sqlite3.connect(place / "hub" / "jupyterhub.sqlite")
        try:
            users = sorted(r[0] for r in conn.execute("SELECT name FROM users"))
        finally:
            conn.close()
        assert users == record.hub_users, (record.run, users, record.hub_users)
    finally:
        shutil.rmtree(place)


def as_restored(tree: Tree) -> Tree:
    """What a restore must give back of a recorded tree: the same, but for the privileges a restore never
    grants (dr/archive/target.py: setuid and setgid cleared on everything but directories, setuid on
    directories too; the index keeps the original mode)."""
    out: Tree = {}
    for path, rec in tree.items():
        clear = stat.S_ISUID if rec["type"] == "dir" else stat.S_ISUID | stat.S_ISGID
        out[path] = {**rec, "mode": rec["mode"] & ~clear}
    return out


def run_volumes(manifest: dict[str, Any]) -> dict[str, set[str]]:
    """Label -> keys of the artifacts of each volume of a run (its manifest, as ``--json`` shows it); the
    hub as ``hub``."""
    out: dict[str, set[str]] = {}
    hub = manifest.get("hub") or {}
    out["hub"] = {a["key"] for a in (hub.get("db"), hub.get("secret")) if a}
    for v in manifest.get("volumes") or []:
        label = volume_label(v.get("user"), v.get("server") or "", v.get("source") or {}, v["key"])
        out[label] = {a["key"] for a in (v.get("archive"), v.get("index")) if a}
    return out


def run_keys(manifest: dict[str, Any]) -> set[str]:
    """Fingerprints of the keys that open every artifact of a run (its manifest, as ``--json`` shows it)."""
    found: list[set[str]] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "sha256" in node and "key" in node:
                found.append(set(node.get("recipients") or ()))
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit({"hub": manifest.get("hub"), "volumes": manifest.get("volumes")})
    assert found, "a run without artifacts"
    return set.intersection(*found)


@dataclass(frozen=True)
class Policy:
    keep_daily: int
    keep_weekly: int
    keep_monthly: int

    def as_settings(self) -> dict[str, int]:
        return {"keep_daily": self.keep_daily, "keep_weekly": self.keep_weekly, "keep_monthly": self.keep_monthly}


def expected_kept(records: Iterable[RunRecord], policy: Policy, tz: tzinfo) -> set[str]:
    """The runs a daily/weekly/monthly policy keeps, computed from first principles: for each kind of
    period, the most recent N periods (local calendar, ISO weeks) that hold a complete or partial run, each
    represented by its newest complete run (its newest partial one if it has no complete run); plus the
    newest complete run."""
    usable = sorted((r for r in records if r.status in ("complete", "partial")), key=lambda r: r.run,
                    reverse=True)
    keep: set[str] = set()
    for count, period in ((policy.keep_daily, "%Y-%m-%d"), (policy.keep_weekly, "week"),
                          (policy.keep_monthly, "%Y-%m")):
        chosen: dict[str, RunRecord] = {}
        for r in usable:
            local = r.started.astimezone(tz)
            year, week, _ = local.isocalendar()
            key = f"{year}-W{week:02d}" if period == "week" else local.strftime(period)
            best = chosen.get(key)
            if best is None or (best.status != "complete" and r.status == "complete"):
                chosen[key] = r
        for key in sorted(chosen, key=lambda k: chosen[k].run, reverse=True)[:count]:
            keep.add(chosen[key].run)
    newest_complete = next((r for r in usable if r.status == "complete"), None)
    if newest_complete is not None:
        keep.add(newest_complete.run)
    return keep


def retention_holds(store: Store, before: list[RunRecord], kept: set[str], policy: Policy, tz: tzinfo) -> None:
    """``before``: the runs there were when prune started; ``kept``: the runs listed after it."""
    want = expected_kept(before, policy, tz)
    assert kept == want, (f"retention kept {sorted(kept)}\nthe policy implies {sorted(want)}")
    assert len(kept) <= policy.keep_daily + policy.keep_weekly + policy.keep_monthly + 1
    repo = Repository.open(store)
    referenced: dict[str, int] = {}
    for run in kept:
        for a in repo.load_manifest(run).artifacts():
            referenced[a.key] = a.size
    stored = {o.key: o.size for o in store.list(layout.DATA)}
    assert stored == referenced, (f"unreferenced: {sorted(set(stored) - set(referenced))[:10]}; "
                                  f"missing: {sorted(set(referenced) - set(stored))[:10]}")
