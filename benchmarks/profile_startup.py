#!/usr/bin/env python3
"""CPU seconds of the short commands (issue 12): `jdr list` over many runs (no catalog yet, up to date, and
right after a backup) and the unchanged re-run, for one or more `jdr` executables measured alternately.

On the shared machine wall times swing with the load; CPU seconds (user + system, of the process and the
children it waited for, from ``wait4``) barely do. Give several ``--jdr LABEL=PATH`` (e.g. the main
checkout's and a branch's) to compare them in the same minutes, round after round::

    .venv/bin/python benchmarks/profile_startup.py --jdr main=/work/main/.venv/bin/jdr --jdr new=.venv/bin/jdr

One repository is shared (made by the first ``--jdr``'s first backup of the corpus of benchmarks/run.py,
then grown to ``--runs`` runs with cloned manifests, as run.py's `jdr list` row does); each executable has its
own catalog. Per round and executable: ``list-cold`` (catalog deleted first), ``list-warm``, ``backup-again``
(the unchanged re-run: every volume reused) and ``list-after-backup``. Prints every measurement, then the
median per executable and measurement.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchors import clone_runs  # benchmarks/anchors.py: the cloned manifests of run.py's `jdr list` row
from profile_backup import measure  # CPU seconds and peak RSS of one command, from wait4
from run import compile_jdr, make_corpus, read_tree


def config(path: Path, repo: Path, homes: Path, hub_db: Path, catalog: Path) -> Path:
    path.write_text(
        "deployment:\n  kind: local\n"
        f"  hub_db: {hub_db}\n  homes: {homes}/jupyter-{{username}}\n"
        f"repository: file://{repo}\n"
        f"catalog: {{url: 'sqlite:///{catalog}'}}\n"
        "backup: {compression_level: 3, threads: 0}\n")
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jdr", action="append", required=True, metavar="LABEL=PATH")
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size-gb", type=float, default=0.3)
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "jdr-profile-startup")
    args = p.parse_args()
    jdrs = dict(j.split("=", 1) for j in args.jdr)
    compile_jdr()  # as run.py: measure jdr, not the compiler (PYTHONDONTWRITEBYTECODE); other trees: compileall
    args.scratch.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.scratch / "corpus", size_gb=args.size_gb, users=args.users, seed=args.seed)
    read_tree(corpus.homes)  # warm the page cache
    repo = args.scratch / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    configs = {label: config(args.scratch / f"{label}.yaml", repo, corpus.homes, corpus.hub_db,
                             args.scratch / f"{label}-catalog.sqlite") for label in jdrs}
    first = next(iter(jdrs))
    wall, cpu, _rss, _doc = measure([jdrs[first], "--config", str(configs[first]), "--json", "backup"])
    print(f"first backup ({first}): wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
    have = clone_runs(repo, args.runs)
    print(f"repository: {have} runs", flush=True)
    cpu_of: dict[tuple[str, str], list[float]] = {}
    for rnd in range(args.rounds):
        for label, jdr in jdrs.items():
            catalog = args.scratch / f"{label}-catalog.sqlite"
            for f in catalog.parent.glob(catalog.name + "*"):
                f.unlink()
            base = [jdr, "--config", str(configs[label]), "--json"]
            for what, argv in (("list-cold", ["list"]), ("list-warm", ["list"]), ("backup-again", ["backup"]),
                               ("list-after-backup", ["list"])):
                wall, cpu, rss, _doc = measure(base + argv)
                cpu_of.setdefault((label, what), []).append(cpu)
                print(f"round {rnd + 1} {label:<8} {what:<18} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                      f"peak rss {rss:6.1f} MiB", flush=True)
    print("\nmedian CPU seconds:")
    for (label, what), values in cpu_of.items():
        print(f"  {label:<8} {what:<18} {statistics.median(values):6.3f}  ({', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
