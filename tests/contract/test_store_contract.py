"""The storage port's contract (dr/repository/store.py), run against every backend through the
parametrized ``store`` fixture: ``file`` in a temporary directory and ``s3`` on a real SeaweedFS server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.errors import ObjectNotFound
from dr.repository.file import INCOMPLETE_DIR, FileStore
from dr.repository.s3 import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, S3Store, S3Writer, part_size
from dr.repository.store import ObjectWriter, Store
from tests.fixtures.s3 import S3Server

MiB = 1024 * 1024


def _incomplete(store: Store) -> int:
    """How many uploads were started and never committed or aborted, seen behind the store's back."""
    if isinstance(store, S3Store):
        return len(store.incomplete_uploads())
    assert isinstance(store, FileStore)
    tmpdir = store.root / INCOMPLETE_DIR
    return len(list(tmpdir.iterdir())) if tmpdir.is_dir() else 0


def _write_in_uneven_chunks(w: ObjectWriter, total: int, seed: bytes = b"jdr") -> str:
    """Write ``total`` pseudo-random bytes in chunks of varying sizes (1 B … 3 MiB); return their SHA-256."""
    sizes = [1, 7, 4096, 65537, 3 * MiB, 1_000_003, 513, 2 * MiB + 1]
    block = hashlib.sha256(seed).digest() * (3 * MiB // 32 + 1)
    h = hashlib.sha256()
    written, i = 0, 0
    while written < total:
        n = min(sizes[i % len(sizes)], total - written)
        chunk = block[i % 31 : i % 31 + n]
        assert w.write(chunk) == n
        h.update(chunk)
        written += n
        i += 1
    return h.hexdigest()


def test_put_get(store: Store) -> None:
    store.put("runs/1/manifest.json", b'{"ok": true}')
    assert store.get("runs/1/manifest.json") == b'{"ok": true}'


def test_put_empty_object(store: Store) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.stat("empty").size == 0


def test_overwrite_replaces(store: Store) -> None:
    store.put("k", b"first version, longer")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    assert store.stat("k").size == 6


def test_missing_object_raises_object_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        store.get("runs/nope")
    with pytest.raises(ObjectNotFound):
        store.open_reader("runs/nope")
    with pytest.raises(ObjectNotFound):
        store.stat("runs/nope")


def test_read_range(store: Store) -> None:
    data = bytes(range(256)) * 40
    store.put("runs/r/archive", data)
    assert store.read_range("runs/r/archive", 0, 10) == data[:10]
    assert store.read_range("runs/r/archive", 5000, 777) == data[5000:5777]
    assert store.read_range("runs/r/archive", len(data) - 3, 100) == data[-3:]  # the object ends first
    assert store.read_range("runs/r/archive", len(data), 10) == b""
    assert store.read_range("runs/r/archive", len(data) + 5, 10) == b""
    assert store.read_range("runs/r/archive", 7, 0) == b""
    with pytest.raises(ObjectNotFound):
        store.read_range("runs/nope", 0, 10)
    with pytest.raises(ValueError):
        store.read_range("runs/r/archive", -1, 10)


def test_read_range_on_moto(moto_server: S3Server) -> None:
    """moto (used for fault injection elsewhere) answers Range GETs as SeaweedFS does."""
    store = moto_server.store(f"s3://{moto_server.new_bucket()}/r")
    data = os.urandom(100_000)
    store.put("a", data)
    assert store.read_range("a", 99_990, 50) == data[99_990:]
    assert store.read_range("a", 12_345, 1000) == data[12_345:13_345]
    assert store.read_range("a", 100_000, 5) == b""


def test_stat(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    store.put("a/b.bin", b"x" * 1234)
    info = store.stat("a/b.bin")
    assert info.key == "a/b.bin"
    assert info.size == 1234
    assert info.modified is not None
    assert before < info.modified < datetime.now(UTC) + timedelta(minutes=5)


def test_list_prefix_sorted(store: Store) -> None:
    # Keys that share a prefix with a "directory": S3 order is byte order ("a-b" < "a.b" < "a/…" < "a0").
    keys = ["runs/a/x", "runs/a/y/z", "runs/a-b", "runs/a.b", "runs/a0", "runs/ab", "runs/b", "other/a"]
    for k in keys:
        store.put(k, k.encode())
    assert [o.key for o in store.list("runs/a")] == sorted(k for k in keys if k.startswith("runs/a"))
    assert [o.key for o in store.list("runs/a/")] == ["runs/a/x", "runs/a/y/z"]
    assert [o.key for o in store.list("")] == sorted(keys)
    assert [o.key for o in store.list("nothing/")] == []
    sizes = {o.key: o.size for o in store.list("runs/")}
    assert sizes["runs/a/y/z"] == len(b"runs/a/y/z")


def test_list_on_empty_store(store: Store) -> None:
    assert list(store.list("")) == []


def test_list_paginates_past_1000_keys(store: Store) -> None:
    # S3 returns at most 1,000 keys per ListObjectsV2 page.
    keys = [f"idx/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"."), keys))
    store.put("idy", b"outside the prefix")
    listed = [o.key for o in store.list("idx/")]
    assert listed == keys


def test_delete_is_idempotent(store: Store) -> None:
    store.put("d/x", b"1")
    store.put("d/y", b"2")
    store.delete("d/x")
    store.delete("d/x")
    store.delete("d/never-existed")
    with pytest.raises(ObjectNotFound):
        store.get("d/x")
    assert [o.key for o in store.list("d/")] == ["d/y"]


def test_streaming_write_and_read_40mib(store: Store) -> None:
    total = 40 * MiB + 12345
    w = store.open_writer("vol/alice.tar.zst")
    digest = _write_in_uneven_chunks(w, total)
    w.commit()
    assert store.stat("vol/alice.tar.zst").size == total
    h = hashlib.sha256()
    n = 0
    with store.open_reader("vol/alice.tar.zst") as r:
        while chunk := r.read(1_000_000):
            assert len(chunk) <= 1_000_000
            h.update(chunk)
            n += len(chunk)
    assert n == total
    assert h.hexdigest() == digest


def test_small_streaming_write(store: Store) -> None:
    w = store.open_writer("small")
    w.write(b"hello ")
    w.write(b"world")
    w.commit()
    assert store.get("small") == b"hello world"


def test_nothing_visible_before_commit(store: Store) -> None:
    store.put("big", b"old")
    w1 = store.open_writer("big")
    digest1 = _write_in_uneven_chunks(w1, 10 * MiB)  # more than one S3 part
    w2 = store.open_writer("new")
    digest2 = _write_in_uneven_chunks(w2, 9 * MiB, seed=b"other")
    assert store.get("big") == b"old"
    with pytest.raises(ObjectNotFound):
        store.stat("new")
    assert [o.key for o in store.list("")] == ["big"]
    w1.commit()
    assert hashlib.sha256(store.get("big")).hexdigest() == digest1
    with pytest.raises(ObjectNotFound):
        store.stat("new")
    w2.commit()
    assert hashlib.sha256(store.get("new")).hexdigest() == digest2
    assert [o.key for o in store.list("")] == ["big", "new"]
    assert _incomplete(store) == 0


def test_commit_makes_exactly_the_written_bytes_visible(store: Store) -> None:
    w = store.open_writer("exact")
    digest = _write_in_uneven_chunks(w, 10 * MiB + 1)
    w.commit()
    assert hashlib.sha256(store.get("exact")).hexdigest() == digest


def test_abort_leaves_nothing(store: Store) -> None:
    w = store.open_writer("aborted")
    _write_in_uneven_chunks(w, 10 * MiB)
    assert _incomplete(store) == 1
    w.abort()
    w.abort()  # twice is fine
    with pytest.raises(ObjectNotFound):
        store.stat("aborted")
    assert list(store.list("")) == []
    assert _incomplete(store) == 0


def test_abort_of_small_writer_leaves_nothing(store: Store) -> None:
    w = store.open_writer("tiny")
    w.write(b"abc")
    w.abort()
    assert list(store.list("")) == []
    assert _incomplete(store) == 0


def test_abandoned_writer_is_cleaned_up(store: Store) -> None:
    # A writer neither committed nor aborted, as a killed process leaves it.
    w = store.open_writer("runs/7/vol/bob.tar.zst")
    _write_in_uneven_chunks(w, 9 * MiB)
    if isinstance(w, S3Writer):
        # A killed process has no part in flight; this writer's part 1 may still be uploading.
        w.flush()
    assert _incomplete(store) == 1
    assert store.cleanup_incomplete(datetime.now(UTC) - timedelta(hours=1)) == 0  # too young
    assert _incomplete(store) == 1
    assert store.cleanup_incomplete(datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert _incomplete(store) == 0
    assert list(store.list("")) == []
    assert store.cleanup_incomplete(datetime.now(UTC) + timedelta(minutes=1)) == 0


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "./a", "a/", "a\\b", "a\0b", "a/./b"])
def test_invalid_keys_are_rejected(store: Store, key: str) -> None:
    with pytest.raises(ValueError, match="invalid repository key"):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.open_writer(key)
    with pytest.raises(ValueError):
        store.stat(key)
    with pytest.raises(ValueError):
        store.delete(key)
    assert list(store.list("")) == []


@pytest.mark.parametrize("key", ["users/élodie/ノート.ipynb", "users/a b+c%20d&e=f/x", "users/emoji-🦄/y"])
def test_unicode_and_odd_keys(store: Store, key: str) -> None:
    store.put(key, key.encode())
    assert store.get(key) == key.encode()
    assert [o.key for o in store.list("users/")] == [key]
    store.delete(key)
    assert list(store.list("users/")) == []


_MEMORY_PROBE = textwrap.dedent("""
    import hashlib, json, os, sys
    from dr.repository.s3 import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, S3Store, part_size

    def rss_mib():
        # Peak RSS since the last reset (VmHWM), in MiB.
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024

    def reset_peak():
        # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS, so that memory freed
        # after imports cannot hide growth during the upload.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    store = S3Store.from_url(sys.argv[1], part_size=int(sys.argv[3]))
    total = int(sys.argv[2])
    chunk = os.urandom(1 << 20)
    store.put("warmup", b"w")  # load botocore's models and open a connection before the baseline
    store.get("warmup")
    reset_peak()
    base = rss_mib()
    w = store.open_writer("big.bin")
    h = hashlib.sha256()
    for i in range(total // len(chunk)):
        piece = chunk[i % 7:] + chunk[: i % 7]
        w.write(piece)
        h.update(piece)
    w.commit()
    after_write = rss_mib()
    reset_peak()
    base_read = rss_mib()
    r = hashlib.sha256()
    with store.open_reader("big.bin") as f:
        while block := f.read(4 << 20):
            r.update(block)
    after_read = rss_mib()
    print(json.dumps({"base": base, "after_write": after_write, "base_read": base_read,
                      "after_read": after_read,
                      "written": h.hexdigest(), "read": r.hexdigest(), "size": store.stat("big.bin").size}))
""")


@pytest.mark.s3
@pytest.mark.slow
def test_streaming_200mib_through_s3_keeps_memory_bounded(s3_bucket: str) -> None:
    # A fresh process whose peak RSS (VmHWM, reset after warm-up) measures the upload and nothing else.
    # Buffering the whole object would add 200 MiB (checked by hand with part_size=300 MiB: +204 MiB).
    total = 200 * MiB
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, s3_bucket, str(total), str(8 * MiB)],
        check=True, capture_output=True, text=True, env=dict(os.environ),
        cwd=Path(__file__).resolve().parents[2], timeout=300,
    )
    m = json.loads(out.stdout)
    print("peak RSS MiB:", m)
    assert m["size"] == total
    assert m["read"] == m["written"]
    # The writer's part being filled and PARTS_IN_FLIGHT parts uploading (8 MiB each) plus botocore's
    # requests; the reader's read-ahead chunks; far below 200 MiB.
    assert m["after_write"] - m["base"] < 64, m
    assert m["after_read"] - m["base_read"] < 64, m


def test_s3_part_sizes_fit_5_tib_in_10000_parts() -> None:
    # Pure arithmetic of the multipart schedule: no need to upload 5 TiB to check it.
    sizes = [part_size(8 * MiB, n) for n in range(MAX_PARTS)]
    assert sizes[0] == sizes[999] == 8 * MiB
    assert sizes[1000] == 16 * MiB
    assert sum(sizes) >= 5 * 1024 * 1024 * MiB
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in sizes)
    assert sizes == sorted(sizes)
