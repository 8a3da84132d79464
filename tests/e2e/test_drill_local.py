"""``jdr drill`` end to end on a local sandbox hub, with the repository on file:// and on real S3.

A drill that passes (report in the repository, plausible RTO/RPO, a history chart after two drills); one
that must fail (a corrupted archive in the store, a user missing from the run); one killed mid-way whose
leftovers the next drill removes; one stopped by SIGTERM that cleans up itself. In every case production —
the hub database file, byte for byte, and every home tree — is exactly as before.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dr.operations.sandbox import Sandbox, create_sandbox
from dr.repository.file import FileStore
from dr.repository.s3 import S3Store
from dr.repository.store import Store
from tests.fixtures.hub import build_hub_db
from tests.treeutil import snapshot_tree

JDR = str(Path(sys.executable).parent / "jdr")
USERS = ("alice", "bob", "carol@example.com", "Émile")


@dataclass
class Prod:
    """A production hub (sandbox), its configuration and the drills' scratch parent."""

    sb: Sandbox
    config: Path
    scratch: Path
    repo_url: str
    users: tuple[str, ...]

    def jdr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([JDR, "--config", str(self.config), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def drill_json(self, *args: str) -> tuple[int, dict[str, Any], str]:
        proc = self.jdr("--json", "drill", *args)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"no JSON from jdr drill (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.returncode, doc, proc.stderr

    def snapshot(self) -> dict[str, Any]:
        """Everything production holds: the hub DB's bytes and every home tree."""
        homes = Path(self.sb.homes).parent
        return {"db": self.sb.hub_db.read_bytes(),
                "db_side": sorted(p.name for p in self.sb.hub_db.parent.iterdir()),
                "homes": {p.name: snapshot_tree(p) for p in sorted(homes.iterdir())}}

    def store(self) -> Store:
        return FileStore.from_url(self.repo_url) if self.repo_url.startswith("file://") \
            else S3Store.from_url(self.repo_url)

    def scratch_dirs(self) -> list[str]:
        return sorted(p.name for p in self.scratch.iterdir()) if self.scratch.exists() else []


@pytest.fixture
def make_prod(tmp_path: Path) -> Callable[..., Prod]:
    def make(repo_url: str, users: tuple[str, ...] = USERS, db_users: tuple[str, ...] | None = None,
             extra: str = "") -> Prod:
        sb = create_sandbox(tmp_path / "prod", users=users)
        # The hub database as JupyterHub's ORM writes it, with tokens, spawner state and a service.
        build_hub_db(sb.hub_db, list(db_users or users))
        scratch = tmp_path / "scratch"
        config = tmp_path / "jdr.yaml"
        config.write_text(f"deployment:\n  kind: local\n  hub_db: {sb.hub_db}\n  homes: {sb.homes}\n"
                          f"repository: {repo_url}\n"
                          f"drill:\n  scratch: {scratch}\n{extra}")
        return Prod(sb=sb, config=config, scratch=scratch, repo_url=repo_url, users=users)

    return make


def backup(prod: Prod, expect: int = 0) -> str:
    proc = prod.jdr("--json", "backup")
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return str(json.loads(proc.stdout)["run"])


def svg_points(html: str) -> dict[str, int]:
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg is not None, "no SVG chart in the HTML report"
    root = ET.fromstring(svg.group(0))
    return {str(p.get("class")): len(p.get("points", "").split())
            for p in root.iter("{http://www.w3.org/2000/svg}polyline")}


def test_drill_passes_reports_into_the_repository_and_charts_history(make_prod: Callable[..., Prod],
                                                                     repo_url: str) -> None:
    prod = make_prod(repo_url)
    run = backup(prod)
    before = prod.snapshot()

    rc, doc, err = prod.drill_json()
    assert rc == 0, json.dumps(doc, indent=1) + err
    assert doc["ok"] and doc["run"] == run and not doc["failures"]
    assert 0 < doc["rpo_seconds"] < 600  # the run is seconds old
    assert doc["rto"]["method"] == "measured" and 0 < doc["rto_seconds"] < 120
    assert doc["rto_seconds"] == pytest.approx(doc["rto"]["hub_seconds"] + doc["rto"]["volumes_seconds"], abs=0.01)
    assert doc["hub"]["integrity"] == "ok" and doc["hub"]["schema"]["verdict"] == "ok"
    assert sorted(doc["users"]["db"]) == sorted(USERS) and doc["users"]["missing_from_run"] == []
    assert sorted(v["label"] for v in doc["volumes"]) == sorted(USERS)
    for v in doc["volumes"]:
        assert v["status"] == "ok" and v["files"] > 0 and v["bytes"] > 2 << 20
        assert v["files_on_disk"] == v["index_files"]
        assert v["notebooks"]["checked"] == 2 and v["notebooks"]["validator"].startswith("nbformat")
    assert doc["target"]["kind"] == "local" and not doc["target"]["kept"]
    assert prod.scratch_dirs() == []  # cleaned up
    store = prod.store()
    keys = sorted(o.key for o in store.list("drills/"))
    assert keys == [f"drills/{doc['drill']}/report.{ext}" for ext in ("html", "json", "md")]
    stored = json.loads(store.get(f"drills/{doc['drill']}/report.json"))
    assert stored["drill"] == doc["drill"] and stored["ok"] and stored["rto_seconds"] == doc["rto_seconds"]
    assert store.get(f"drills/{doc['drill']}/report.md").decode().startswith(f"# jdr drill {doc['drill']}: PASSED")

    # A second drill, on a sample of one user: the RTO is extrapolated by bytes, and the chart has two drills.
    rc, second, err = prod.drill_json("--users", "1")
    assert rc == 0, json.dumps(second, indent=1) + err
    assert second["drill"] != doc["drill"]
    assert len(second["volumes"]) == 1 and second["sample"]["sampled"] and second["sample"]["restorable"] == 4
    rto = second["rto"]
    assert rto["method"] == "extrapolated-by-bytes" and "extrapolated by bytes" in rto["explanation"]
    assert rto["seconds"] == pytest.approx(
        rto["hub_seconds"] + rto["volumes_seconds"] * rto["total_bytes"] / rto["sampled_bytes"], abs=0.02)
    html = store.get(f"drills/{second['drill']}/report.html").decode()
    assert "<script" not in html
    points = svg_points(html)
    assert points["rto"] >= 2 and points["rpo"] >= 2
    assert "extrapolated by bytes" in store.get(f"drills/{second['drill']}/report.md").decode()
    store.close()

    assert prod.snapshot() == before  # production untouched
    assert prod.scratch_dirs() == []


def test_drill_fails_on_a_corrupt_archive_and_a_user_missing_from_the_run(make_prod: Callable[..., Prod],
                                                                          repo_url: str) -> None:
    # dave is a hub user whose home cannot be read (a file, not a directory): his backup fails, so he is
    # missing from the run. (A user with no home at all is "absent", which is not a failure.)
    prod = make_prod(repo_url, users=("alice", "bob"), db_users=("alice", "bob", "dave"))
    prod.sb.home("dave").write_text("not a directory\n")
    backup(prod, expect=1)  # a partial run
    store = prod.store()
    archives = [o.key for o in store.list("data/") if o.key.endswith(".tar.zst") and "/volumes/alice-" in o.key]
    assert len(archives) == 1
    data = bytearray(store.get(archives[0]))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in alice's archive
    store.put(archives[0], bytes(data))
    before = prod.snapshot()

    rc, doc, err = prod.drill_json()
    assert rc == 1, json.dumps(doc, indent=1) + err
    assert not doc["ok"] and doc["status"] == "failed"
    reasons = "\n".join(doc["failures"])
    assert "user dave is missing from the run: their backup failed" in reasons
    assert "is not a directory" in reasons  # the backup's own reason is carried along
    assert doc["users"]["missing_from_run"] == ["dave"]
    alice = next(v for v in doc["volumes"] if v["label"] == "alice")
    bob = next(v for v in doc["volumes"] if v["label"] == "bob")
    assert alice["status"] == "failed" and "volume alice: restore failed" in reasons
    assert bob["status"] == "ok"
    stored = json.loads(store.get(f"drills/{doc['drill']}/report.json"))
    assert stored["failures"] == doc["failures"]
    md = store.get(f"drills/{doc['drill']}/report.md").decode()
    assert "FAILED" in md.splitlines()[0] and "user dave is missing from the run" in md
    html = store.get(f"drills/{doc['drill']}/report.html").decode()
    assert "FAILED" in html and "volume alice: restore failed" in html
    store.close()
    assert prod.scratch_dirs() == []
    assert prod.snapshot() == before


def _big_home(prod: Prod, user: str, mib: int = 160) -> None:
    big = prod.sb.home(user) / "data" / "big"
    big.mkdir()
    for i in range(mib // 8):
        (big / f"part-{i:03d}.bin").write_bytes(os.urandom(8 << 20))


def _start_drill_and_wait_for_a_volume(prod: Prod) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([JDR, "--config", str(prod.config), "drill", "--all"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        homes = list(prod.scratch.glob("jdr-drill-*/home/*"))
        if homes:
            return proc, homes[0].parents[1]
        assert proc.poll() is None, f"drill ended before restoring a volume: {proc.communicate()}"
        assert time.monotonic() < deadline, "the drill never started restoring a volume"
        time.sleep(0.005)


def test_killed_drill_leaves_a_marked_place_that_the_next_drill_removes(make_prod: Callable[..., Prod],
                                                                        tmp_path: Path) -> None:
    prod = make_prod(f"file://{tmp_path / 'repo'}", users=("alice", "bob"))
    _big_home(prod, "alice")
    _big_home(prod, "bob")
    backup(prod)
    before = prod.snapshot()
    # Things in the scratch parent that are not leftovers of a dead drill must survive.
    (prod.scratch / "jdr-drill-unmarked").mkdir(parents=True)
    (prod.scratch / "jdr-drill-unmarked" / "keep.txt").write_text("not jdr's")
    alive = prod.scratch / "jdr-drill-running"
    alive.mkdir()
    (alive / ".jdr-drill.json").write_text(json.dumps({
        "format": "jdr-drill-scratch", "drill": "running", "pid": os.getpid(), "host": os.uname().nodename}))

    proc, place = _start_drill_and_wait_for_a_volume(prod)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert place.is_dir(), "the killed drill's scratch place should still be there"
    marker = json.loads((place / ".jdr-drill.json").read_text())
    assert marker["format"] == "jdr-drill-scratch" and marker["pid"] == proc.pid
    assert prod.snapshot() == before

    rc, doc, err = prod.drill_json("--users", "1")
    assert rc == 0, json.dumps(doc, indent=1) + err
    assert doc["leftovers_removed"] == [str(place)]
    assert not place.exists()
    assert prod.scratch_dirs() == ["jdr-drill-running", "jdr-drill-unmarked"]
    assert (prod.scratch / "jdr-drill-unmarked" / "keep.txt").read_text() == "not jdr's"
    assert prod.snapshot() == before


def test_sigterm_stops_the_drill_and_it_cleans_up(make_prod: Callable[..., Prod], tmp_path: Path) -> None:
    prod = make_prod(f"file://{tmp_path / 'repo'}", users=("alice",))
    _big_home(prod, "alice")
    backup(prod)
    before = prod.snapshot()
    proc, place = _start_drill_and_wait_for_a_volume(prod)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "SIGTERM" in err
    assert not place.exists() and prod.scratch_dirs() == []
    assert prod.snapshot() == before


def test_keep_leaves_the_restored_place_and_later_drills_leave_it_alone(make_prod: Callable[..., Prod],
                                                                        tmp_path: Path) -> None:
    prod = make_prod(f"file://{tmp_path / 'repo'}", users=("alice", "bob"))
    backup(prod)
    rc, doc, err = prod.drill_json("--keep")
    assert rc == 0, err
    kept = Path(doc["target"]["scratch"])
    assert doc["target"]["kept"] and any(str(kept) in n for n in doc["notes"])
    assert (kept / "hub" / "jupyterhub.sqlite").is_file()
    assert snapshot_tree(kept / "home" / "alice", root_attrs=False) == \
        snapshot_tree(prod.sb.home("alice"), root_attrs=False)
    rc, doc2, err = prod.drill_json()
    assert rc == 0, err
    assert doc2["leftovers_removed"] == [] and kept.is_dir()


def test_drill_starts_a_real_hub_on_the_restored_database(make_prod: Callable[..., Prod], tmp_path: Path) -> None:
    prod = make_prod(f"file://{tmp_path / 'repo'}", users=("alice", "bob"))
    backup(prod)
    before = prod.snapshot()
    rc, doc, err = prod.drill_json("--start-hub")
    assert rc == 0, json.dumps(doc, indent=1) + err
    assert doc["hub_start"]["status"] == "ok", doc["hub_start"]
    assert doc["hub_start"]["version"]
    assert prod.scratch_dirs() == []
    assert prod.snapshot() == before


def test_drill_without_runs_cannot_run(make_prod: Callable[..., Prod], tmp_path: Path) -> None:
    prod = make_prod(f"file://{tmp_path / 'repo'}", users=("alice",))
    FileStore.from_url(prod.repo_url).put("config.json", json.dumps(
        {"format": "jdr-repository", "version": 1, "id": "x", "encrypted": False}).encode())
    proc = prod.jdr("drill")
    assert proc.returncode == 3, proc.stderr
    assert "no run to drill" in proc.stderr
    assert prod.scratch_dirs() == []


def test_scratch_inside_production_is_refused(make_prod: Callable[..., Prod], tmp_path: Path) -> None:
    prod = make_prod(f"file://{tmp_path / 'repo'}", users=("alice",),
                     extra="")
    backup(prod)
    homes = Path(prod.sb.homes).parent
    cfg = prod.config.read_text().replace(f"scratch: {prod.scratch}", f"scratch: {homes}")
    prod.config.write_text(cfg)
    before = prod.snapshot()
    proc = prod.jdr("drill")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "overlaps the production directory" in proc.stderr
    assert prod.snapshot() == before
