"""The age file format (https://age-encryption.org/v1), X25519 recipients only, streaming both ways.

An artifact encrypted here decrypts with the age CLI (``age -d -i key.txt``) and the reverse; tests check
both directions against the real binary. Built only on ``cryptography`` primitives.

Layout: a text header (one ``-> X25519`` stanza per recipient wrapping a random 16-byte file key, then
``--- <HMAC>``), a 16-byte payload nonce, then the payload in 64 KiB chunks sealed with ChaCha20-Poly1305
under a key derived from the file key and nonce; each chunk's nonce is an 11-byte counter and a flag that
marks the last chunk, so truncation and reordering are detected.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dr.crypto import bech32
from dr.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

VERSION_LINE = b"age-encryption.org/v1"
X25519_LABEL = b"age-encryption.org/v1/X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
FILE_KEY_SIZE = 16
_COLUMNS = 64
# A header holds one short stanza per recipient; anything near this size is not an artifact of ours.
_MAX_HEADER = 1 << 20
_ZERO_NONCE = bytes(12)

NO_IDENTITY = "artifact cannot be decrypted: no identity matches"
AUTH_FAILED = "authentication failed — wrong key or tampered data"


class NoIdentityMatches(IntegrityError):
    """None of the given identities opens the file: it was encrypted to other keys (not damage)."""


class _Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes) -> bytes:
    """Strict, canonical, unpadded standard base64 as age requires; raises ValueError otherwise."""
    if b"=" in text or b"\r" in text or b"\n" in text:
        raise ValueError("padded or multi-line base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    if _b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


# --- keys ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """An X25519 public key: whom an artifact is encrypted to. Text form ``age1…``."""

    public_bytes: bytes

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Parse ``age1…``. Raises ConfigError if it is not a valid X25519 age recipient."""
        try:
            hrp, data = bech32.decode(text.strip())
        except bech32.Bech32Error:
            raise ConfigError("not a valid age recipient (expected age1…)") from None
        if hrp != RECIPIENT_HRP or len(data) != 32 or text.strip() != text.strip().lower():
            raise ConfigError("not a valid age recipient (expected age1…)")
        return cls(data)

    def text(self) -> str:
        """The ``age1…`` form, as ``age -r`` takes it."""
        return bech32.encode(RECIPIENT_HRP, self.public_bytes)

    @property
    def fingerprint(self) -> str:
        """A short public name for this key: the first 16 hex digits of the SHA-256 of its ``age1…`` text
        (``printf %s age1… | sha256sum | cut -c1-16``). Identifies a key; proves nothing."""
        return fingerprint(self.text())

    def __str__(self) -> str:
        return self.text()


class Identity:
    """An X25519 secret key, able to decrypt what was encrypted to its ``recipient``.

    Its repr and str show only the public recipient, never the secret.
    """

    __slots__ = ("_key", "recipient")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.recipient = Recipient(key.public_key().public_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Parse an ``AGE-SECRET-KEY-1…`` line or a whole age key file (``#`` comments, blank lines ignored;
        the first identity line wins). Raises ConfigError, whose message never contains the key."""
        return cls.parse_all(text)[0]

    @classmethod
    def parse_all(cls, text: str) -> list[Identity]:
        """Every identity of an age key file, in order (``age -d -i`` takes such a file too); at least one.

        Every non-comment line must be a valid identity. Raises ConfigError, whose message never contains
        the key."""
        found: list[Identity] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not line.upper().startswith("AGE-SECRET-KEY-1"):
                raise ConfigError("not an age identity: a line is neither a comment nor AGE-SECRET-KEY-1…")
            try:
                hrp, data = bech32.decode(line)
            except bech32.Bech32Error:
                raise ConfigError("not a valid age identity (AGE-SECRET-KEY-1… fails its checksum)") from None
            if hrp != IDENTITY_HRP or len(data) != 32:
                raise ConfigError("not a valid age identity (AGE-SECRET-KEY-1… of the wrong length)")
            found.append(cls(X25519PrivateKey.from_private_bytes(data)))
        if not found:
            raise ConfigError("no age identity (AGE-SECRET-KEY-1…) found")
        return found

    def secret_text(self) -> str:
        """The ``AGE-SECRET-KEY-1…`` form. Handle with care: this is the secret."""
        return bech32.encode(IDENTITY_HRP, self._key.private_bytes_raw()).upper()

    def _unwrap(self, share: bytes, body: bytes) -> bytes | None:
        """The file key from an X25519 stanza, or None if the stanza is not for this identity."""
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # low-order point: all-zero shared secret, which age rejects
            return None
        wrap_key = _hkdf(shared, share + self.recipient.public_bytes, X25519_LABEL)
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None)
        except InvalidTag:
            return None

    def __repr__(self) -> str:
        return f"Identity(recipient={self.recipient.text()!r})"

    __str__ = __repr__


def fingerprint(recipient_text: str) -> str:
    """The fingerprint of an ``age1…`` recipient (see :attr:`Recipient.fingerprint`)."""
    return sha256(recipient_text.strip().encode("ascii")).hexdigest()[:16]


def generate_identity() -> Identity:
    """A new random X25519 identity."""
    return Identity(X25519PrivateKey.generate())


# --- header ----------------------------------------------------------------------------------------------


def _wrap_lines(data: bytes) -> bytes:
    """Stanza body: base64 at 64 columns; the last line is always shorter than 64 (possibly empty)."""
    encoded = _b64encode(data)
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
    if not lines or len(lines[-1]) == _COLUMNS:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


def _header(file_key: bytes, recipients: Sequence[Recipient]) -> bytes:
    out = [VERSION_LINE + b"\n"]
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.public_bytes))
        wrap_key = _hkdf(shared, share + recipient.public_bytes, X25519_LABEL)
        body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        out.append(b"-> X25519 " + _b64encode(share) + b"\n" + _wrap_lines(body))
    out.append(b"---")
    header = b"".join(out)
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, sha256).digest()
    return header + b" " + _b64encode(mac) + b"\n"


@dataclass(frozen=True)
class _Stanza:
    kind: bytes
    args: list[bytes]
    body: bytes


def _malformed(why: str) -> IntegrityError:
    return IntegrityError(f"artifact cannot be decrypted: malformed age header ({why})")


def _parse_header(lines: list[bytes]) -> tuple[list[_Stanza], bytes, bytes]:
    """(stanzas, bytes covered by the MAC, MAC) from the header's lines, each without its newline."""
    if not lines or lines[0] != VERSION_LINE:
        raise _malformed("not an age-encryption.org/v1 file")
    stanzas: list[_Stanza] = []
    i = 1
    while i < len(lines) and lines[i].startswith(b"-> "):
        parts = lines[i][3:].split(b" ")
        if not parts or any(not p for p in parts):
            raise _malformed("empty stanza argument")
        i += 1
        body: list[bytes] = []
        while True:
            if i >= len(lines):
                raise _malformed("stanza without end")
            line = lines[i]
            i += 1
            if len(line) > _COLUMNS:
                raise _malformed("stanza line too long")
            body.append(line)
            if len(line) < _COLUMNS:
                break
        try:
            decoded = _b64decode(b"".join(body))
        except ValueError:
            raise _malformed("bad base64 in stanza") from None
        stanzas.append(_Stanza(parts[0], parts[1:], decoded))
    if i != len(lines) - 1 or not lines[i].startswith(b"--- "):
        raise _malformed("no MAC line")
    try:
        mac = _b64decode(lines[i][4:])
    except ValueError:
        raise _malformed("bad base64 in MAC") from None
    covered = b"".join(line + b"\n" for line in lines[:i]) + b"---"
    return stanzas, covered, mac


def _unwrap_file_key(stanzas: list[_Stanza], identities: Sequence[Identity]) -> bytes:
    for stanza in stanzas:
        if stanza.kind == b"scrypt" and len(stanzas) != 1:
            raise _malformed("scrypt stanza must be alone")
    for identity in identities:
        for stanza in stanzas:
            if stanza.kind != b"X25519":
                continue  # other recipient types, and "grease" stanzas, are not ours to open
            if len(stanza.args) != 1 or len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
                raise _malformed("invalid X25519 stanza")
            try:
                share = _b64decode(stanza.args[0])
            except ValueError:
                raise _malformed("bad base64 in X25519 stanza") from None
            if len(share) != 32:
                raise _malformed("invalid X25519 stanza")
            file_key = identity._unwrap(share, stanza.body)
            if file_key is not None:
                return file_key
    raise NoIdentityMatches(NO_IDENTITY, hint="decrypt with the installation's key (encryption.key_file)")


# --- payload ---------------------------------------------------------------------------------------------


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class AgeWriter:
    """Encrypts a stream to ``recipients``, writing the age file to ``sink`` as it goes.

    Buffers at most one 64 KiB chunk. ``close()`` seals the last chunk and must be called for the output
    to be valid; it does not close ``sink``. Leaving the ``with`` block on an exception does not seal it,
    so an aborted stream never looks complete (its reader reports truncation).

    Not an ``io`` class on purpose: IOBase's finaliser would call ``close()`` and seal an abandoned stream.
    Under a zstd ``stream_writer``, pass ``closefd=False`` and close this writer only on success; for
    typing, ``cast(IO[bytes], writer)`` — zstd only calls ``write`` and ``flush``.
    """

    def __init__(self, sink: _Sink, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise ValueError("AgeWriter needs at least one recipient")
        self._sink = sink
        file_key = os.urandom(FILE_KEY_SIZE)
        nonce = os.urandom(NONCE_SIZE)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buf = bytearray()
        self._counter = 0
        self.closed = False
        sink.write(_header(file_key, recipients) + nonce)

    def write(self, data: ReadableBuffer) -> int:
        """Encrypt ``data``; returns its length. Full chunks go to the sink once more data follows them."""
        if self.closed:
            raise ValueError("write to a closed AgeWriter")
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            if len(self._buf) == CHUNK_SIZE:
                # Only now is this chunk known not to be the last one.
                self._seal(last=False)
            take = min(CHUNK_SIZE - len(self._buf), len(view) - pos)
            self._buf += view[pos : pos + take]
            pos += take
        return len(view)

    def _seal(self, *, last: bool) -> None:
        if self._counter >= 1 << 88:
            raise ValueError("age payload too large")
        self._sink.write(self._aead.encrypt(_chunk_nonce(self._counter, last), bytes(self._buf), None))
        self._counter += 1
        self._buf.clear()

    def flush(self) -> None:
        """Nothing to do: a chunk can only be written once the next byte (or close) arrives."""

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """Seal the last chunk (empty only if nothing was written). Idempotent; leaves the sink open."""
        if not self.closed:
            self._seal(last=True)
            self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.closed = True  # abandoned: deliberately no last chunk


class AgeReader(io.RawIOBase):
    """Decrypts an age file read from ``src`` with the first of ``identities`` that opens it.

    The header is read and authenticated on construction. Plaintext is released a whole authenticated chunk
    at a time, so no byte of a tampered chunk is ever returned. Raises IntegrityError for no matching
    identity, a bad header MAC or chunk tag, truncation, and data after the last chunk. Closing does not
    close ``src``.
    """

    def __init__(self, src: _Source, identities: Sequence[Identity]) -> None:
        super().__init__()
        self._src = src
        self._pending = bytearray()  # bytes read past the header, not yet consumed
        lines = self._read_header_lines()
        stanzas, covered, mac = _parse_header(lines)
        file_key = _unwrap_file_key(stanzas, identities)
        expected = hmac.new(_hkdf(file_key, b"", b"header"), covered, sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise IntegrityError(AUTH_FAILED)
        nonce = self._read_exact(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise IntegrityError(f"{AUTH_FAILED}: truncated before the payload")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._plain = b""
        self._offset = 0
        self._done = False
        self._failed: IntegrityError | None = None

    def _read_header_lines(self) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            nl = self._pending.find(b"\n")
            if nl < 0:
                if total + len(self._pending) > _MAX_HEADER:
                    raise _malformed("header too large")
                block = self._src.read(4096)
                if not block:
                    raise _malformed("truncated header")
                self._pending += block
                continue
            line = bytes(self._pending[:nl])
            del self._pending[: nl + 1]
            total += nl + 1
            lines.append(line)
            if line.startswith(b"---"):
                return lines

    def _read_exact(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at end of input."""
        out = bytearray(self._pending[:n])
        del self._pending[:n]
        while len(out) < n:
            block = self._src.read(n - len(out))
            if not block:
                break
            out += block
        return bytes(out)

    def _next_chunk(self) -> None:
        sealed = self._read_exact(ENC_CHUNK_SIZE)
        if len(sealed) < ENC_CHUNK_SIZE:
            # A short chunk can only be the last one; an empty last chunk only if it is the first one.
            if len(sealed) < TAG_SIZE or (len(sealed) == TAG_SIZE and self._counter > 0):
                raise IntegrityError(f"{AUTH_FAILED}: truncated")
            self._plain = self._open(sealed, last=True)
            self._done = True
        else:
            try:
                self._plain = self._aead.decrypt(_chunk_nonce(self._counter, False), sealed, None)
            except InvalidTag:
                # A full-size chunk may still be the last one, when the plaintext is a multiple of 64 KiB.
                self._plain = self._open(sealed, last=True)
                self._done = True
                if self._read_exact(1):
                    raise IntegrityError(f"{AUTH_FAILED}: trailing data after the last chunk") from None
        self._offset = 0
        self._counter += 1

    def _open(self, sealed: bytes, *, last: bool) -> bytes:
        try:
            return self._aead.decrypt(_chunk_nonce(self._counter, last), sealed, None)
        except InvalidTag:
            raise IntegrityError(AUTH_FAILED) from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("read from a closed AgeReader")
        if self._failed is not None:
            raise self._failed  # once broken, stays broken: never resynchronise on later chunks
        out = memoryview(buffer).cast("B")
        while self._offset == len(self._plain):
            if self._done:
                return 0
            try:
                self._next_chunk()
            except IntegrityError as e:
                self._failed = e
                raise
        n = min(len(out), len(self._plain) - self._offset)
        out[:n] = self._plain[self._offset : self._offset + n]
        self._offset += n
        return n


# --- whole buffers ---------------------------------------------------------------------------------------


def encrypt_bytes(data: bytes, recipients: Sequence[Recipient]) -> bytes:
    """The age file of ``data`` encrypted to ``recipients``."""
    sink = io.BytesIO()
    writer = AgeWriter(sink, recipients)
    writer.write(data)
    writer.close()
    return sink.getvalue()


def open_decrypting(src: _Source, identities: Sequence[Identity]) -> io.BufferedReader:
    """A buffered, typed ``BinaryIO`` view of AgeReader (e.g. for ``ZstdDecompressor().stream_reader``)."""
    return io.BufferedReader(AgeReader(src, identities), buffer_size=CHUNK_SIZE)


def decrypt_bytes(data: bytes, identities: Sequence[Identity]) -> bytes:
    """The plaintext of age file ``data``; raises IntegrityError as AgeReader does."""
    with AgeReader(io.BytesIO(data), identities) as reader:
        return reader.read()
