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

``--pairs N`` measures N alternating pairs of a first ``jdr backup`` and ``tar -cf - | zstd -T0 -3 > f``
(fsynced, as ``benchmarks/run.py`` does) of the same homes, back to back, and prints each pair's wall-time
ratio: the goal of issue 12 is about wall time, which a loaded machine distorts, so only pairs measured in
the same minute are compared.

``--timeline`` runs the first backup in this process instead and samples every thread's CPU time
(``/proc/self/task/*/stat``) every 0.1 s, grouped by thread name (``MainThread``, ``jdr-backup`` = the
volume threads that walk, read, hash and write tar headers under the GIL, ``jdr-zstd`` = compression
workers): how many cores each group kept busy in each 0.5 s of the run, and the core-seconds left idle
(the machine's CPUs times the wall time, minus the CPU time used). A row is printed per 0.5 s.
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

from run import (  # benchmarks/run.py: the corpus generator, the anchor's runner
    BIN,
    Corpus,
    make_corpus,
    read_tree,
    run_pipeline,
)


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


def measure(cmd: list[str]) -> tuple[float, float, float, dict[str, object], float]:
    """Run ``cmd``; (wall s, CPU s of it and the children it waited for, its peak RSS MiB, its JSON output,
    the system part of its CPU s)."""
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
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, doc, usage.ru_stime


def _thread_ticks() -> dict[int, int]:
    """utime + stime (clock ticks) of each thread of this process, by native thread id."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def _group(name: str) -> str:
    return name.rstrip("_0123456789") or name


def timeline(cfg: Path, step: float = 0.1, bucket: float = 0.5) -> None:
    """One backup in this process, with the busy cores of each thread group per ``bucket`` seconds."""
    import threading

    from dr.cli import jobs
    from dr.settings import load_settings

    settings = load_settings(cfg, environ=dict(os.environ))
    hz = os.sysconf("SC_CLK_TCK")
    names: dict[int, str] = {}
    last: dict[int, int] = {}  # ticks of every thread seen, kept after it ends
    samples: list[tuple[float, dict[str, int]]] = []
    done = threading.Event()

    def sample() -> None:
        while True:
            for t in threading.enumerate():
                if t.native_id is not None:
                    names[t.native_id] = _group(t.name)
            last.update(_thread_ticks())
            by: dict[str, int] = {}
            for tid, n in last.items():
                group = names.get(tid, "other")
                by[group] = by.get(group, 0) + n
            samples.append((time.perf_counter(), by))
            if done.wait(step):
                return

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    cpu0 = os.times()
    started = time.perf_counter()
    sampler.start()
    try:
        result = jobs.backup(settings)
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    t = os.times()
    cpu = t.user + t.system - cpu0.user - cpu0.system
    groups = sorted({g for _, by in samples for g in by} - {"sampler"})
    print(f"in-process backup: {result.status}, wall {wall:.2f} s, cpu {cpu:.2f} s, "
          f"{os.cpu_count()} CPUs: {(os.cpu_count() or 1) * wall - cpu:.2f} core-seconds idle")
    print("   t   " + " ".join(f"{g:>12}" for g in groups) + "        all")
    first_t, prev = samples[0]
    edge = first_t + bucket
    start_by = prev
    start_t = first_t
    for when, by in samples[1:]:
        if when < edge and when != samples[-1][0]:
            continue
        dt = when - start_t
        used = {g: (by.get(g, 0) - start_by.get(g, 0)) / hz / dt for g in groups}
        print(f"{start_t - first_t:5.1f} " + " ".join(f"{used[g]:12.2f}" for g in groups)
              + f" {sum(used.values()):10.2f}")
        start_t, start_by, edge = when, by, when + bucket
    totals = {g: (samples[-1][1].get(g, 0) - samples[0][1].get(g, 0)) / hz for g in groups}
    print("CPU s  " + " ".join(f"{totals[g]:12.2f}" for g in groups))


def archived(doc: dict[str, object]) -> str:
    vols = (doc.get("manifest") or {}).get("volumes") or []  # type: ignore[union-attr]
    new = sum(1 for v in vols if v.get("status") == "ok" and not v.get("reused_from"))
    return f"{new} of {len(vols)} volumes archived"


def pairs(args: argparse.Namespace, corpus: Corpus, jdr: str) -> None:
    """``args.pairs`` pairs: a first jdr backup into a new repository, then tar | zstd of the same homes."""
    homes, hub_db = corpus.homes, corpus.hub_db
    tar_file = args.scratch / "anchor.tar.zst"
    ratios = []
    for i in range(args.pairs):
        repo = args.scratch / "repo-pair"
        shutil.rmtree(repo, ignore_errors=True)
        (args.scratch / "profile-catalog.sqlite").unlink(missing_ok=True)
        cfg = config(args.scratch, repo, homes, hub_db, args.set)
        wall, cpu, rss, doc, _ = measure([jdr, "--config", str(cfg), "--json", "backup"])
        tar_file.unlink(missing_ok=True)
        ran = run_pipeline([["tar", "-cf", "-", "-C", str(homes), "."], ["zstd", "-T0", "-3", "-q", "-c"]],
                           log=args.scratch / "anchor.log", stdout=tar_file, fsync=tar_file)
        ratios.append(wall / ran.seconds)
        print(f"pair {i + 1}: jdr wall {wall:6.2f} s cpu {cpu:6.2f} s rss {rss:6.1f} MiB ({archived(doc)}); "
              f"tar|zstd wall {ran.seconds:6.2f} s cpu {ran.cpu:6.2f} s; ratio {wall / ran.seconds:.2f}",
              flush=True)
    ratios.sort()
    print(f"wall-time ratio jdr / tar|zstd: median {ratios[len(ratios) // 2]:.2f} "
          f"(of {', '.join(f'{r:.2f}' for r in ratios)})")


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
    p.add_argument("--pairs", type=int, default=0, help="alternate N first backups with tar | zstd -T0 -3")
    p.add_argument("--timeline", action="store_true",
                   help="run one first backup in this process; print the busy cores of each thread group")
    p.add_argument("--switch-interval", type=float, help="with --timeline: sys.setswitchinterval (seconds)")
    args = p.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    args.scratch.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.scratch / "corpus", size_gb=args.size_gb, users=args.users, seed=args.seed)
    read_tree(corpus.homes)  # warm the page cache
    jdr = str(BIN / "jdr") if (BIN / "jdr").exists() else (shutil.which("jdr") or "jdr")
    if args.timeline:
        repo = args.scratch / "repo-timeline"
        shutil.rmtree(repo, ignore_errors=True)
        (args.scratch / "profile-catalog.sqlite").unlink(missing_ok=True)
        timeline(config(args.scratch, repo, corpus.homes, corpus.hub_db, args.set))
        return 0
    if args.pairs:
        pairs(args, corpus, jdr)
        return 0
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
            wall, cpu, rss, doc, sys_s = measure(cmd)
            shown = "first (setup)" if what == "first" and args.only == "again" else what
            print(f"{shown:<14} wall {wall:6.2f} s  cpu {cpu:6.2f} s (sys {sys_s:5.2f})  peak rss {rss:6.1f} MiB  "
                  f"{archived(doc)}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
