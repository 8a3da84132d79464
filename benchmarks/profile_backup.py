#!/usr/bin/env python3
"""Where a jdr backup's CPU time goes: one ``jdr backup`` of the benchmark corpus, measured in CPU seconds.

Wall time on the shared 2-core machine swings with the load; the CPU seconds (user + system) of the
process tree barely do, so this is the figure to compare before and after a change. Runs only jdr (no
peers, no S3), on the corpus of ``benchmarks/run.py`` (same generator, same parameters, reused if present)::

    .venv/bin/python benchmarks/profile_backup.py --size-gb 0.3 --users 5          # first + unchanged re-run
    .venv/bin/python benchmarks/profile_backup.py --profile out/first.prof --only first
    .venv/bin/python benchmarks/profile_backup.py --repeat 3 --set backup.parallel_volumes=1

Prints one line per run: wall seconds, CPU seconds, peak RSS (of the ``jdr`` process, from
``wait4``), and the volumes archived. ``--profile FILE`` runs the first backup under
cProfile (``pstats`` then reads FILE; cProfile's own overhead inflates the CPU figure of that run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BIN, make_corpus  # benchmarks/run.py: the corpus generator


def config(scratch: Path, repo: Path, homes: Path, hub_db: Path, settings: list[str]) -> Path:
    backup = {"compression_level": "3", "threads": "0"}
    for s in settings:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        if section != "backup":
            raise SystemExit(f"--set {s}: only backup.* settings")
        backup[name] = value
    path = scratch / "profile.yaml"
    path.write_text(
        "deployment:\n  kind: local\n"
        f"  hub_db: {hub_db}\n  homes: {homes}/jupyter-{{username}}\n"
        f"repository: file://{repo}\n"
        f"catalog: {{url: 'sqlite:///{scratch / 'profile-catalog.sqlite'}'}}\n"
        "backup: {" + ", ".join(f"{k}: {v}" for k, v in backup.items()) + "}\n")
    return path


def measure(cmd: list[str]) -> tuple[float, float, float, dict[str, object]]:
    """Run ``cmd``; (wall s, CPU s of it and the children it waited for, its peak RSS MiB, its JSON output)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the sum of all children
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{cmd} exited {proc.returncode}:\n{stderr.decode(errors='replace')[-3000:]}")
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError:
        doc = {}
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, doc


def archived(doc: dict[str, object]) -> str:
    vols = (doc.get("manifest") or {}).get("volumes") or []  # type: ignore[union-attr]
    new = sum(1 for v in vols if v.get("status") == "ok" and not v.get("reused_from"))
    return f"{new} of {len(vols)} volumes archived"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=0.3)
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "jdr-profile")
    p.add_argument("--only", choices=("first", "again", "both"), default="both")
    p.add_argument("--repeat", type=int, default=1, help="first backups to measure (each into a new repository)")
    p.add_argument("--profile", type=Path, help="cProfile output of the (first) measured backup")
    p.add_argument("--set", action="append", default=[], metavar="backup.NAME=VALUE")
    args = p.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.scratch / "corpus", size_gb=args.size_gb, users=args.users, seed=args.seed)
    for dirpath, _dirs, files in os.walk(corpus.homes):  # warm the page cache
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                while fh.read(1 << 20):
                    pass
    jdr = str(BIN / "jdr") if (BIN / "jdr").exists() else (shutil.which("jdr") or "jdr")
    profiled = "again" if args.only == "again" else "first"
    for i in range(args.repeat):
        repo = args.scratch / f"repo{i}"
        shutil.rmtree(repo, ignore_errors=True)
        (args.scratch / "profile-catalog.sqlite").unlink(missing_ok=True)
        cfg = config(args.scratch, repo, corpus.homes, corpus.hub_db, args.set)
        base = [jdr, "--config", str(cfg), "--json", "backup"]
        for what in ("first", "again"):
            if what == "again" and args.only == "first":
                continue
            cmd = base
            if args.profile is not None and what == profiled and i == 0:
                cmd = [sys.executable, "-m", "cProfile", "-o", str(args.profile), jdr, *base[1:]]
            wall, cpu, rss, doc = measure(cmd)
            shown = "first (setup)" if what == "first" and args.only == "again" else what
            print(f"{shown:<14} wall {wall:6.2f} s  cpu {cpu:6.2f} s  peak rss {rss:6.1f} MiB  {archived(doc)}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
