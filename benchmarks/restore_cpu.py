"""CPU seconds of a full restore, jdr against `zstd -dc | tar -x`, on a loaded machine.

Wall times mean nothing while other work shares the cores, so this measures CPU seconds (getrusage:
user + system, every thread, children included) of one restore of a 0.1 GB home from ``run.make_corpus``,
archived once by ``write_archive``. Each round restores the same archive with jdr (this checkout, and any
other checkouts given with ``--other``, each in a fresh interpreter; the CPU counted is that of
``extract_archive`` alone, imports excluded) and with ``zstd -dc | tar -x`` (the whole pipeline), into
tmpfs (``/dev/shm``) so that the disk's writeback does not dominate. Rounds alternate the tools so that
load changes hit all of them alike.

    python benchmarks/restore_cpu.py [--rounds 3] [--other /work/main] [--profile out.txt]

``--profile`` also writes a cProfile of one restore by this checkout, timed with the main thread's CPU
clock (the decompressing threads are not in it), sorted by own time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = r"""
import io, json, os, resource, sys, time
from pathlib import Path
from dr.archive.index import read_index
from dr.archive.reader import extract_archive
archive, index_path, dest, profile = sys.argv[1:5]
with open(index_path, "rb") as f:
    index = {e.path: e for e in read_index(f)}
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
with open(archive, "rb") as src:
    if profile:
        import cProfile, pstats
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
    start = cpu()
    extract_archive(src, Path(dest), index=index)
    used = cpu() - start
    if profile:
        prof.disable()
        with open(profile, "w") as out:
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(45)
print(json.dumps({"cpu": used}))
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def jdr_restore(checkout: Path, archive: Path, index: Path, dest: Path, profile: str = "") -> float:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run([sys.executable, "-c", _CHILD, str(archive), str(index), str(dest), profile],
                          env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["cpu"])


def tar_restore(archive: Path, dest: Path) -> float:
    before = _children_cpu()
    subprocess.run(["bash", "-c", 'zstd -dc -- "$1" | tar -x -C "$2"', "-", str(archive), str(dest)],
                   check=True)
    return _children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", action="append", default=[], help="another checkout to measure too")
    parser.add_argument("--profile", default="", help="write a cProfile of one restore here")
    parser.add_argument("--work", default="/tmp/jdr-restore-cpu", help="corpus and archive (reused)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import run  # type: ignore[import-not-found]

    from dr.archive.writer import write_archive

    work = Path(args.work)
    corpus = run.make_corpus(work / "corpus", size_gb=0.1, users=1, seed=20240601)
    home = corpus.home(corpus.users[0])
    archive, index = work / "home.tar.zst", work / "home.index.zst"
    if not archive.exists():
        with open(archive, "wb") as out, open(index, "wb") as idx:
            write_archive(home, out, idx, threads=2)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    tools: dict[str, object] = {"zstd -dc | tar -x": None, "jdr (this checkout)": ROOT}
    tools.update({f"jdr ({other})": Path(other) for other in args.other})
    results: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(args.rounds):
        for name, checkout in tools.items():
            dest = Path(tempfile.mkdtemp(prefix="jdr-restore-cpu-", dir=shm))
            try:
                used = (tar_restore(archive, dest) if checkout is None
                        else jdr_restore(checkout, archive, index, dest))  # type: ignore[arg-type]
            finally:
                shutil.rmtree(dest)
            results[name].append(used)
            print(f"{name}: {used:.2f} CPU s", flush=True)
    if args.profile:
        dest = Path(tempfile.mkdtemp(prefix="jdr-restore-cpu-", dir=shm))
        try:
            jdr_restore(ROOT, archive, index, dest, profile=args.profile)
        finally:
            shutil.rmtree(dest)
    print(json.dumps({"files": corpus.files, "bytes": corpus.bytes, "cpu_s": results}, indent=1))


if __name__ == "__main__":
    main()
