"""The keys one jdr process holds: the installation key that writes, and every identity that may read.

Writing needs only public keys: new artifacts are encrypted to the repository's recipients (its
``config.json``), never to a list of this process's own. Reading tries every identity held, so a key file
with several ``AGE-SECRET-KEY-1…`` lines, or extra key files (``encryption.identities``), open runs made
before a key rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from dr.crypto.age import AgeReader, AgeWriter, Identity, Recipient
from dr.crypto.age_range import AgeRange


class Keyring:
    """``current`` (the first identity) is the installation key; all of ``identities`` may decrypt.

    ``extra`` are the recipients the configuration adds (``encryption.recipients``): given to a new
    repository, and required to be among an existing repository's recipients.
    """

    def __init__(self, identities: Sequence[Identity], extra: Sequence[Recipient] = ()) -> None:
        if not identities:
            raise ValueError("a Keyring needs at least one identity")
        unique: dict[bytes, Identity] = {}
        for identity in identities:
            unique.setdefault(identity.recipient.public_bytes, identity)
        self.identities = list(unique.values())
        self.current = self.identities[0]
        self.extra = list(extra)

    @property
    def fingerprints(self) -> list[str]:
        """Fingerprints of every identity held, the installation key first."""
        return [i.recipient.fingerprint for i in self.identities]

    def writer(self, sink: Any, recipients: Sequence[Recipient]) -> AgeWriter:
        """Encrypt to ``recipients`` (the repository's), whatever keys this process holds."""
        return AgeWriter(sink, recipients)

    def reader(self, src: BinaryIO) -> BinaryIO:
        """Decrypt ``src`` with whichever held identity opens it; closing the reader closes ``src``.

        Raises :class:`dr.crypto.age.NoIdentityMatches` when none does (``src`` is then closed)."""
        return _ClosingAgeReader(src, self.identities)  # type: ignore[return-value]

    def range_reader(self, fetch: Callable[[int, int], bytes], size: int) -> AgeRange:
        """Ranged decryption of the age file of ``size`` bytes that ``fetch(start, length)`` reads
        (:class:`dr.crypto.age_range.AgeRange`); NoIdentityMatches when no held identity opens it."""
        return AgeRange(fetch, size, self.identities)

    def __repr__(self) -> str:
        return f"Keyring(fingerprints={self.fingerprints!r})"


class _ClosingAgeReader(AgeReader):
    def __init__(self, src: BinaryIO, identities: Sequence[Identity]) -> None:
        self._raw_src = src
        try:
            super().__init__(src, identities)
        except BaseException:
            src.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw_src.close()
