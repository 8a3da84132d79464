"""Writing and reading artifacts: every byte stored is counted and hashed on the way through.

``ArtifactWriter`` streams into a store upload (optionally through age encryption) and yields an
:class:`dr.model.Artifact` with the size and SHA-256 of the stored bytes. ``VerifiedReader`` streams an
artifact back and raises :class:`dr.errors.IntegrityError` at the end if the bytes are not exactly the
recorded ones, so callers must read to EOF before trusting what they read (extraction happens in a
staging place and is only swapped in after that).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from dr.errors import IntegrityError
from dr.model import Artifact
from dr.repository.store import ObjectWriter, Retention, Store
from dr.util.testhooks import pause_at


class Encryptor(Protocol):
    """What the repository needs from an encryption scheme (dr.crypto.keyring.Keyring provides it)."""

    @property
    def fingerprints(self) -> list[str]:
        """Fingerprints of the keys held (that can decrypt)."""
        ...

    def writer(self, sink: Any, recipients: Sequence[Any]) -> Any:
        """Wrap a sink (has ``write``) into a writer with ``write`` and ``close`` encrypting to
        ``recipients`` (objects with a ``fingerprint``)."""
        ...

    def reader(self, src: BinaryIO) -> BinaryIO:
        """Wrap an encrypted source into a decrypting, authenticating reader."""
        ...

    def range_reader(self, fetch: Callable[[int, int], bytes], size: int) -> Any:
        """Random access to the plaintext of the encrypted file of ``size`` bytes that ``fetch(start,
        length)`` reads: an object with ``size`` (plaintext bytes) and ``read(start, length)``."""
        ...


class _CountingSink:
    def __init__(self, target: ObjectWriter) -> None:
        self._target = target
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        b = bytes(data)
        self._target.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)


class ArtifactWriter:
    """A context manager: ``with repo.artifact_writer(key) as w: w.write(...)``; then ``w.artifact``.

    Leaving the block with an exception aborts the upload (nothing appears under the key).
    """

    def __init__(self, store: Store, key: str, run: str, encoding: str,
                 encryptor: Encryptor | None, recipients: Sequence[Any] = (),
                 retention: Retention | None = None) -> None:
        self.key = key
        self._run = run
        self._encoding = encoding
        self._recipients = tuple(r.fingerprint for r in recipients) if encryptor is not None else ()
        self._upload = store.open_writer(key, retention)
        self._sink = _CountingSink(self._upload)
        self._crypt = encryptor.writer(self._sink, recipients) if encryptor is not None else None
        self.plain_bytes = 0
        self._artifact: Artifact | None = None
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self._crypt is not None:
            self._crypt.write(bytes(data))
        else:
            self._sink.write(data)
        self.plain_bytes += n
        pause_at("artifact-upload", self._sink.size)
        return n

    def commit(self) -> Artifact:
        if self._crypt is not None:
            self._crypt.close()
        self._upload.commit()
        self._closed = True
        self._artifact = Artifact(key=self.key, size=self._sink.size, sha256=self._sink.sha.hexdigest(),
                                  encoding=self._encoding, run=self._run, recipients=self._recipients)
        return self._artifact

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._upload.abort()

    @property
    def artifact(self) -> Artifact:
        if self._artifact is None:
            raise RuntimeError(f"artifact {self.key} was not committed")
        return self._artifact

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


class VerifiedReader(io.RawIOBase):
    """Reads an artifact's stored bytes and checks size and SHA-256 when the end is reached.

    Raises IntegrityError as soon as more bytes than recorded arrive, and at EOF when the size or digest
    differs. ``verified`` is True once the whole artifact was read and matched.
    """

    def __init__(self, src: BinaryIO, artifact: Artifact) -> None:
        super().__init__()
        self._src = src
        self._artifact = artifact
        self._sha = hashlib.sha256()
        self._size = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b)
        data = self._src.read(len(view))
        n = len(data)
        if n == 0:
            self._check_end()
            return 0
        self._size += n
        if self._size > self._artifact.size:
            raise IntegrityError(f"artifact {self._artifact.key} is larger than recorded "
                                 f"({self._artifact.size} bytes)")
        self._sha.update(data)
        view[:n] = data
        return n

    def _check_end(self) -> None:
        if self.verified:
            return
        if self._size != self._artifact.size:
            raise IntegrityError(f"artifact {self._artifact.key} is truncated: {self._size} of "
                                 f"{self._artifact.size} bytes")
        if self._sha.hexdigest() != self._artifact.sha256:
            raise IntegrityError(f"artifact {self._artifact.key} does not match its recorded SHA-256")
        self.verified = True

    def close(self) -> None:
        try:
            self._src.close()
        finally:
            super().close()


def drain(reader: BinaryIO, chunk: int = 1 << 20) -> None:
    """Read ``reader`` to EOF (so a VerifiedReader below it checks the whole artifact)."""
    while reader.read(chunk):
        pass


def encoding_for(base: str, encrypted: bool) -> str:
    return f"{base}+age" if encrypted and base != "identity" else ("age" if encrypted else base)


def is_encrypted(encoding: str) -> bool:
    return encoding == "age" or encoding.endswith("+age")


def check_encodings(encodings: Sequence[str]) -> None:
    known = {"zstd", "zstd+age", "age", "identity"}
    for e in encodings:
        if e not in known:
            raise IntegrityError(f"unknown artifact encoding {e!r}; upgrade jdr")
