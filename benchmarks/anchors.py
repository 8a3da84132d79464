"""Measurements of benchmarks/run.py beyond the bulk backup/restore rows (issue 12): start-up, `jdr list`
over many runs, restoring one small file from homes of two sizes, with the bytes each tool reads.

Kept apart from run.py (which generates the corpus and runs the bulk rows) so each stays small.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Run a command as a child and print, on the last line of stderr, how many bytes the child tree read
# (rchar of /proc/self/io: a reaped child's I/O counters are added to its parent's). It counts every
# read() — the store's files, and for jdr also Python's own modules (a constant few MB).
IO_WRAPPER = r"""
import subprocess, sys
def rchar():
    with open("/proc/self/io") as f:
        return int(next(l for l in f if l.startswith("rchar:")).split()[1])
before = rchar()
rc = subprocess.run(sys.argv[1:]).returncode
print(f"jdr-bench-rchar {rchar() - before}", file=sys.stderr)
sys.exit(rc)
"""


def clone_runs(repo: Path, n: int) -> int:
    """Make the file repository ``repo`` hold ``n`` runs by copying its newest manifest under new run ids
    (one a minute, going back in time). The copies name the first run's artifacts, so they are only for
    listing, never for restore or prune. Returns how many runs it now holds."""
    runs = repo / "runs"
    manifests = sorted(runs.glob("*.json"))
    doc = json.loads(manifests[-1].read_text())
    start = dt.datetime.strptime(doc["run"][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    have = len(manifests)
    for i in range(1, n - have + 1):
        t = start - dt.timedelta(minutes=i)
        run = t.strftime("%Y%m%dT%H%M%SZ") + f"-{i:06x}"
        doc["run"] = run
        doc["started"] = t.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        doc["finished"] = (t + dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        (runs / f"{run}.json").write_text(json.dumps(doc, indent=1))
    return len(list(runs.glob("*.json")))


def median_seconds(argv: list[str], env: dict[str, str], times: int = 5) -> float:
    """Median wall time of ``argv`` (output discarded)."""
    seconds = []
    for _ in range(times):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - t0)
    return sorted(seconds)[len(seconds) // 2]


def read_bytes(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Wall seconds and bytes read (rchar) of one run of ``argv``."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", IO_WRAPPER, *argv], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    line = [x for x in done.stderr.splitlines() if x.startswith("jdr-bench-rchar ")][-1]
    return seconds, int(line.split()[1])


def startup_rows(jdr: str, config: Path, repo: Path, env: dict[str, str], runs: int) -> list[dict[str, Any]]:
    """`jdr --version` and `jdr list` over ``runs`` runs (a copy of ``repo`` with cloned manifests; the
    first list builds the catalog, the next ones only check it) against `restic version`."""
    rows = [{"what": "jdr --version", "seconds": median_seconds([jdr, "--version"], env)},
            {"what": "restic version", "seconds": median_seconds(["restic", "version"], env)}]
    many = repo.parent / f"{repo.name}-{runs}-runs"
    shutil.rmtree(many, ignore_errors=True)
    shutil.copytree(repo / "runs", many / "runs")
    shutil.copy2(repo / "config.json", many / "config.json")
    have = clone_runs(many, runs)
    cfg = config.parent / f"{config.stem}-{runs}-runs.yaml"
    catalog = config.parent / f"{config.stem}-{runs}-runs-catalog.sqlite"
    text = config.read_text().replace(f"file://{repo}", f"file://{many}")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("catalog:"))
    cfg.write_text(text + f"\ncatalog: {{url: 'sqlite:///{catalog}'}}\n")
    t0 = time.perf_counter()
    subprocess.run([jdr, "--config", str(cfg), "list"], env=env, stdout=subprocess.DEVNULL, check=True)
    rows.append({"what": f"jdr list, {have} runs, no catalog yet", "seconds": time.perf_counter() - t0})
    rows.append({"what": f"jdr list, {have} runs", "seconds":
                 median_seconds([jdr, "--config", str(cfg), "list"], env)})
    shutil.rmtree(many)
    return rows


def env_without_bench(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "PYTHONPATH"} | {"PATH": os.environ.get("PATH", "")}


def make_big_home(home: Path, size: int, seed: int) -> str:
    """A home of about ``size`` bytes: large half-compressible files (1 MiB blocks of random bytes and of
    digit text, 256 MiB each), some small notebooks, and the target, ``notebooks/target.ipynb`` (100 KB),
    written between the large files so that it sits in the middle of the archive. Returns its path."""
    import random

    rng = random.Random(seed)
    (home / "notebooks").mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(exist_ok=True)
    for i in range(50):
        (home / "notebooks" / f"nb{i:03d}.ipynb").write_bytes(rng.randbytes(4096).hex().encode())
    block, written, n = 1 << 20, 0, 0
    half = size // 2
    target = "notebooks/target.ipynb"
    while written < size:
        if written >= half and not (home / target).exists():
            (home / target).write_text(json.dumps({"cells": [{"source": rng.randbytes(50_000).hex()}]}))
        part = min(256 * block, size - written)
        with (home / "data" / f"large-{n:03d}.bin").open("wb") as f:
            left = part
            while left > 0:
                chunk = min(block, left)
                data = rng.randbytes(chunk) if (left // block) % 2 else (
                    "".join(rng.choices("0123456789", k=64)).encode() * (chunk // 64 + 1))[:chunk]
                f.write(data)
                left -= chunk
        written += part
        n += 1
    if not (home / target).exists():
        (home / target).write_text(json.dumps({"cells": [{"source": rng.randbytes(50_000).hex()}]}))
    return target


def one_file_rows(jdr: str, scratch: Path, env: dict[str, str], sizes_gb: list[float], log: Path,
                  restic: bool) -> list[dict[str, Any]]:
    """Restore one 100 KB notebook from homes of ``sizes_gb`` (backed up by jdr to file:// and by restic
    first, not measured): wall seconds and bytes read, jdr `restore --path` vs `restic restore --include`."""
    from dr.operations.sandbox import make_hub_db

    root = scratch / "one-file"
    users = tuple(f"big{i}" for i in range(len(sizes_gb)))
    (root / "hub").mkdir(parents=True)
    make_hub_db(root / "hub" / "jupyterhub.sqlite", users)
    cfg = root / "jdr.yaml"
    cfg.write_text(f"deployment: {{kind: local, hub_db: '{root}/hub/jupyterhub.sqlite', "
                   f"homes: '{root}/home/jupyter-{{username}}'}}\n"
                   f"repository: 'file://{root}/jdr-repo'\ncatalog: {{url: 'sqlite:///{root}/catalog.sqlite'}}\n")
    targets = {u: make_big_home(root / "home" / f"jupyter-{u}", int(gb * 1e9), i)
               for i, (u, gb) in enumerate(zip(users, sizes_gb, strict=True))}
    subprocess.run([jdr, "--config", str(cfg), "backup"], env=env, stdout=subprocess.DEVNULL, check=True)
    restic_repo = root / "restic-repo"
    if restic:
        subprocess.run(["restic", "--repo", str(restic_repo), "init", "--repository-version", "2", "--quiet"],
                       env=env, check=True)
        subprocess.run(["restic", "--repo", str(restic_repo), "backup", "--quiet", str(root / "home")],
                       env=env, check=True)
    rows = []
    for user, gb in zip(users, sizes_gb, strict=True):
        target = targets[user]
        seconds, nbytes = read_bytes([jdr, "--config", str(cfg), "restore", "--user", user, "--path", target,
                                      "--into", "restored", "--yes"], env, log)
        got = root / "home" / f"jupyter-{user}" / "restored" / target
        rows.append({"what": f"jdr restore --path, {gb:g} GB home", "seconds": seconds, "read_bytes": nbytes,
                     "ok": got.exists() and got.stat().st_size > 90_000})
        if restic:
            out = root / f"restic-out-{user}"
            seconds, nbytes = read_bytes(
                ["restic", "--repo", str(restic_repo), "--cache-dir", str(root / "restic-cache"), "--quiet",
                 "restore", "latest", "--target", str(out), "--include",
                 str(root / "home" / f"jupyter-{user}" / target)], env, log)
            rows.append({"what": f"restic restore --include, {gb:g} GB home", "seconds": seconds,
                         "read_bytes": nbytes, "ok": any(out.rglob("target.ipynb"))})
    shutil.rmtree(root)
    return rows
