"""Ranged decryption of age files (dr/crypto/age_range.py): any plaintext range from only the chunks
that hold it, the same bytes as whole-file decryption (by jdr and by the age CLI), and damage refused."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dr.crypto.age import CHUNK_SIZE, ENC_CHUNK_SIZE, NoIdentityMatches, decrypt_bytes, encrypt_bytes, generate_identity
from dr.crypto.age_range import AgeRange
from dr.crypto.keys import write_key_file
from dr.errors import IntegrityError

AGE = shutil.which("age")


class _Fetch:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __call__(self, start: int, length: int) -> bytes:
        self.reads.append((start, length))
        return self.data[start:start + length]


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 123])
def test_every_range_matches_whole_file_decryption(size: int, tmp_path: Path) -> None:
    me = generate_identity()
    data = os.urandom(size)
    ct = encrypt_bytes(data, [me.recipient])
    if AGE is not None:  # the reference: whole-file decryption by the age CLI
        key = tmp_path / "key.txt"
        write_key_file(key, me)
        whole = subprocess.run([AGE, "-d", "-i", str(key)], input=ct, capture_output=True, check=True).stdout
    else:
        whole = decrypt_bytes(ct, [me])
    assert whole == data
    r = AgeRange(_Fetch(ct), len(ct), [me])
    assert r.size == size
    points = sorted({0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, size // 2, max(size - 1, 0), size})
    for a in points:
        for n in (0, 1, 100, CHUNK_SIZE, 3 * CHUNK_SIZE, size):
            assert r.read(a, n) == whole[a:a + n], (a, n)


def test_a_range_reads_only_its_chunks() -> None:
    me = generate_identity()
    data = os.urandom(40 * CHUNK_SIZE)
    ct = encrypt_bytes(data, [me.recipient])
    fetch = _Fetch(ct)
    r = AgeRange(fetch, len(ct), [me])
    fetch.reads.clear()
    assert r.read(20 * CHUNK_SIZE + 5, 1000) == data[20 * CHUNK_SIZE + 5:20 * CHUNK_SIZE + 1005]
    assert len(fetch.reads) == 1 and fetch.reads[0][1] == ENC_CHUNK_SIZE


def test_damage_is_refused_only_where_read() -> None:
    me = generate_identity()
    data = os.urandom(10 * CHUNK_SIZE + 7)
    ct = bytearray(encrypt_bytes(data, [me.recipient]))
    payload = len(ct) - (10 * ENC_CHUNK_SIZE + 7 + 16)
    ct[payload + 3 * ENC_CHUNK_SIZE + 10] ^= 1  # chunk 3
    r = AgeRange(_Fetch(bytes(ct)), len(ct), [me])
    assert r.read(5 * CHUNK_SIZE, 100) == data[5 * CHUNK_SIZE:5 * CHUNK_SIZE + 100]
    with pytest.raises(IntegrityError, match="chunk 3"):
        r.read(3 * CHUNK_SIZE + 1, 10)


def test_truncation_is_refused_at_the_end() -> None:
    me = generate_identity()
    data = os.urandom(4 * CHUNK_SIZE)
    ct = encrypt_bytes(data, [me.recipient])
    cut = ct[:-ENC_CHUNK_SIZE]  # the last full chunk gone: the new last chunk lacks the last flag
    r = AgeRange(_Fetch(cut), len(cut), [me])
    assert r.read(0, 10) == data[:10]  # chunks before the end still read
    with pytest.raises(IntegrityError, match="authentication failed"):
        r.read(r.size - 1, 1)
    short = AgeRange(_Fetch(ct[:-5]), len(ct), [me])  # fewer bytes stored than recorded
    with pytest.raises(IntegrityError, match="truncated"):
        short.read(len(data) - 1, 1)


def test_wrong_key_and_bad_header() -> None:
    me, other = generate_identity(), generate_identity()
    ct = encrypt_bytes(b"secret", [me.recipient])
    with pytest.raises(NoIdentityMatches):
        AgeRange(_Fetch(ct), len(ct), [other])
    bad = bytearray(ct)
    bad[ct.index(b"\n---") + 6] ^= 1  # the header MAC
    with pytest.raises(IntegrityError):
        AgeRange(_Fetch(bytes(bad)), len(bad), [me])
    with pytest.raises(IntegrityError, match="malformed"):
        AgeRange(_Fetch(b"not age at all\n"), 15, [me])
