"""Ranged decryption of an age file: read and authenticate only the 64 KiB chunks a plaintext range needs.

An age payload is a 16-byte nonce and then chunks of 64 KiB of plaintext, each sealed with
ChaCha20-Poly1305 under a nonce made of its number and a flag set only on the last chunk
(:mod:`dr.crypto.age`). Chunk ``k`` of the plaintext is therefore the ciphertext bytes
``payload + k * (64 KiB + 16)`` onward and can be opened alone, once the header has given the payload key.
:class:`AgeRange` knows the ciphertext's total size (recorded in the manifest), hence which chunk is the
last: that one must open with the last-chunk flag, every other one without it, so a truncated,
extended, reordered or altered file is refused for every range that touches the damage.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from dr.crypto.age import (
    _MAX_HEADER,
    AUTH_FAILED,
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    Identity,
    _chunk_nonce,
    _hkdf,
    _malformed,
    _parse_header,
    _unwrap_file_key,
)
from dr.errors import IntegrityError

Fetch = Callable[[int, int], bytes]  # (start, length) -> ciphertext bytes; fewer only at the end


class AgeRange:
    """Plaintext ranges of the age file of ``size`` ciphertext bytes that ``fetch`` reads.

    The header is read (one small ranged read, more only for a large header) and authenticated on
    construction. Raises NoIdentityMatches when no identity opens it, IntegrityError for a malformed
    header, a bad MAC, or a size that no age file has.
    """

    def __init__(self, fetch: Fetch, size: int, identities: Sequence[Identity]) -> None:
        self._fetch = fetch
        want = 4096
        while True:
            head = fetch(0, min(want, size))
            found = head.find(b"\n---")
            end = head.find(b"\n", found + 1) if found >= 0 else -1
            if end >= 0:
                break
            if len(head) >= size or len(head) < min(want, size):
                raise _malformed("truncated header")
            if want >= _MAX_HEADER:
                raise _malformed("header too large")
            want *= 2
        lines = head[:end].split(b"\n")
        stanzas, covered, mac = _parse_header(lines)
        file_key = _unwrap_file_key(stanzas, identities)
        if not hmac.compare_digest(hmac.new(_hkdf(file_key, b"", b"header"), covered, sha256).digest(), mac):
            raise IntegrityError(AUTH_FAILED)
        start = end + 1
        nonce = head[start:start + NONCE_SIZE]
        if len(nonce) < NONCE_SIZE:
            nonce = fetch(start, NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise IntegrityError(f"{AUTH_FAILED}: truncated before the payload")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._payload = start + NONCE_SIZE
        sealed = size - self._payload
        self._chunks = max(1, -(-sealed // ENC_CHUNK_SIZE))
        tail = sealed - (self._chunks - 1) * ENC_CHUNK_SIZE
        if tail < TAG_SIZE or (tail == TAG_SIZE and self._chunks > 1):
            raise IntegrityError(f"{AUTH_FAILED}: truncated")
        #: Plaintext bytes in all.
        self.size = sealed - self._chunks * TAG_SIZE

    def read(self, start: int, length: int) -> bytes:
        """Plaintext bytes ``start`` to ``start + length`` (fewer only where the plaintext ends), from one
        ranged read of the chunks that hold them. Raises IntegrityError if a chunk does not authenticate
        or the ciphertext ends early."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range {start}+{length}")
        length = min(length, self.size - start)
        if length <= 0:
            return b""
        first, last = start // CHUNK_SIZE, (start + length - 1) // CHUNK_SIZE
        want = min((last + 1) * ENC_CHUNK_SIZE, self._sealed_end()) - first * ENC_CHUNK_SIZE
        data = self._fetch(self._payload + first * ENC_CHUNK_SIZE, want)
        if len(data) != want:
            raise IntegrityError(f"{AUTH_FAILED}: truncated")
        plain = bytearray()
        for k in range(first, last + 1):
            at = (k - first) * ENC_CHUNK_SIZE
            try:
                plain += self._aead.decrypt(_chunk_nonce(k, k == self._chunks - 1),
                                            data[at:at + ENC_CHUNK_SIZE], None)
            except InvalidTag:
                raise IntegrityError(f"{AUTH_FAILED} (chunk {k})") from None
        skip = start - first * CHUNK_SIZE
        return bytes(plain[skip:skip + length])

    def _sealed_end(self) -> int:
        return self.size + self._chunks * TAG_SIZE
