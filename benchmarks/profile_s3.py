#!/usr/bin/env python3
"""A jdr backup to S3 and a full restore from it, measured in CPU seconds, for two versions of jdr's code.

Starts SeaweedFS (as benchmarks/run.py does), makes the benchmark corpus (same generator and parameters),
then for each round and each code directory given (``--code DIR``, a checkout whose ``dr`` package is
imported instead of the installed one): a first ``jdr backup`` into a fresh bucket, then ``jdr restore
--all`` from it into an empty place. Prints wall seconds, CPU seconds (user + system of the jdr process,
from ``wait4``) and peak RSS. Versions alternate within a round, so that the machine's load hits both alike::

    git archive BASE dr | tar -x -C /tmp/before          # the code before a change
    .venv/bin/python benchmarks/profile_s3.py --code /tmp/before --code . --rounds 3

``--blocked`` instead runs the backup and the restore in one process each and reports how long jdr's own
threads spent inside the S3 writer's ``write`` and ``commit`` (waiting for S3, as opposed to compressing),
and inside reads of S3 objects (the read-ahead thread's own reads not counted).
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

from profile_backup import measure  # benchmarks/profile_backup.py
from run import make_corpus, read_tree, s3_client, seaweedfs  # benchmarks/run.py

RUN_JDR = """
import os, sys
sys.path.insert(0, os.environ["PYTHONPATH"])  # before the current directory that -c puts first
import dr
assert dr.__file__.startswith(os.environ["PYTHONPATH"]), dr.__file__  # the code under test, not the installed
if os.environ.get("JDR_PROFILE_IN_FLIGHT"):  # --in-flight: only code that uploads in the background has it
    import dr.repository.s3_upload as upload
    upload.PARTS_IN_FLIGHT = int(os.environ["JDR_PROFILE_IN_FLIGHT"])
from dr.cli.main import main
sys.exit(main())
"""

BLOCKED = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import dr
assert dr.__file__.startswith(sys.argv[1]), dr.__file__
try:
    import dr.repository.s3_upload as mod
    mod.PARTS_IN_FLIGHT = int(os.environ.get("JDR_PROFILE_IN_FLIGHT") or mod.PARTS_IN_FLIGHT)
except ImportError:
    import dr.repository.s3 as mod
import threading
spent = [0.0]
def timed(fn):
    def wrapper(*a, **kw):
        if threading.current_thread().name.startswith("jdr-s3-read"):
            return fn(*a, **kw)  # the read-ahead thread's reads: not the restore waiting
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t
    return wrapper
mod.S3Writer.write = timed(mod.S3Writer.write)
mod.S3Writer.commit = timed(mod.S3Writer.commit)
import dr.repository.s3 as s3
s3.S3Reader.readinto = timed(s3.S3Reader.readinto)
try:
    import dr.repository.readahead as ra
    ra.ReadAhead.readinto = timed(ra.ReadAhead.readinto)
except ImportError:
    pass
from dr.cli.main import main
sys.argv = ["jdr", *sys.argv[2:]]
t0 = time.perf_counter()
try:
    main()
except SystemExit:
    pass
print(json.dumps({"blocked": spent[0], "wall": time.perf_counter() - t0}), file=sys.stderr)
"""


def config(path: Path, bucket: str, homes: Path, hub_db: Path, catalog: Path) -> Path:
    path.write_text(
        "deployment:\n  kind: local\n"
        f"  hub_db: {hub_db}\n  homes: {homes}/jupyter-{{username}}\n"
        f"repository: s3://{bucket}/backups\n"
        f"catalog: {{url: 'sqlite:///{catalog}'}}\n"
        "backup: {compression_level: 3, threads: 0}\n")
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=0.3)
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "jdr-profile-s3")
    p.add_argument("--code", type=Path, action="append", required=True, help="a checkout holding dr/")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--blocked", action="store_true", help="time spent in the S3 writer (in-process backup)")
    p.add_argument("--no-restore", action="store_true")
    p.add_argument("--in-flight", type=int, action="append", default=[],
                   help="also run the last --code with this many parts in flight (PARTS_IN_FLIGHT)")
    args = p.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.scratch / "corpus", size_gb=args.size_gb, users=args.users, seed=args.seed)
    read_tree(corpus.homes)  # warm the page cache
    weed_dir = args.scratch / "weed"
    shutil.rmtree(weed_dir, ignore_errors=True)
    n = 0
    with seaweedfs(weed_dir) as aws:
        client = s3_client(aws)
        for rnd in range(args.rounds):
            versions = [(c.resolve(), None) for c in args.code]
            versions += [(args.code[-1].resolve(), k) for k in args.in_flight]
            for code, in_flight in versions:
                n += 1
                bucket = f"bench-{n}"
                client.create_bucket(Bucket=bucket)
                env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JDR_"))}, **aws,
                       "PYTHONPATH": str(code)}
                if in_flight is not None:
                    env["JDR_PROFILE_IN_FLIGHT"] = str(in_flight)
                label = f"{code}" + (f" in-flight={in_flight}" if in_flight is not None else "")
                place = args.scratch / f"run{n}"
                shutil.rmtree(place, ignore_errors=True)
                place.mkdir()
                cfg = config(place / "backup.yaml", bucket, corpus.homes, corpus.hub_db, place / "cat.sqlite")
                if args.blocked:
                    out = subprocess.run([sys.executable, "-c", BLOCKED, str(code), "--config", str(cfg),
                                          "--json", "backup"], env=env, capture_output=True, text=True,
                                         check=False)
                    doc = json.loads(out.stderr.strip().splitlines()[-1])
                    print(f"round {rnd} {label:<45} backup blocked in S3Writer {doc['blocked']:6.2f} s "
                          f"of {doc['wall']:6.2f} s", flush=True)
                    if not args.no_restore:
                        target = place / "restore"
                        (target / "home").mkdir(parents=True)
                        cfg_r = config(place / "restore.yaml", bucket, target / "home",
                                       target / "hub" / "hub.sqlite", place / "cat-r.sqlite")
                        out = subprocess.run([sys.executable, "-c", BLOCKED, str(code), "--config", str(cfg_r),
                                              "--json", "restore", "--all", "--yes"], env=env, capture_output=True,
                                             text=True, check=False)
                        doc = json.loads(out.stderr.strip().splitlines()[-1])
                        print(f"round {rnd} {label:<45} restore waited for S3 reads {doc['blocked']:6.2f} s "
                              f"of {doc['wall']:6.2f} s", flush=True)
                    shutil.rmtree(place, ignore_errors=True)
                    continue
                cmd = [sys.executable, "-c", RUN_JDR, "--config", str(cfg), "--json"]
                with _env(env):
                    wall, cpu, rss, _ = measure([*cmd, "backup"])
                print(f"round {rnd} {label:<45} backup  wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                      f"rss {rss:6.1f} MiB", flush=True)
                if args.no_restore:
                    continue
                target = place / "restore"
                (target / "home").mkdir(parents=True)
                cfg_r = config(place / "restore.yaml", bucket, target / "home", target / "hub" / "hub.sqlite",
                               place / "cat-r.sqlite")
                with _env(env):
                    wall, cpu, rss, _ = measure([sys.executable, "-c", RUN_JDR, "--config", str(cfg_r), "--json",
                                                 "restore", "--all", "--yes"])
                print(f"round {rnd} {label:<45} restore wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                      f"rss {rss:6.1f} MiB", flush=True)
                shutil.rmtree(place, ignore_errors=True)
    return 0


class _env:
    """Run a child with ``env`` (measure() takes no environment): swap os.environ for the block."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __enter__(self) -> None:
        self.saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)

    def __exit__(self, *exc: object) -> None:
        os.environ.clear()
        os.environ.update(self.saved)


if __name__ == "__main__":
    started = time.time()
    code = main()
    print(f"done in {time.time() - started:.0f} s", flush=True)
    raise SystemExit(code)
