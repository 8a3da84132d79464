"""Volume archives: a POSIX (pax) tar of a home directory, compressed with zstd, plus a file index.

The archive is a plain ``.tar.zst``: ``zstd -d < a.tar.zst | tar -x --numeric-owner`` restores it by hand.
The index (zstd-compressed JSON lines, docs/FORMAT.md) lists every entry with its attributes and the
SHA-256 of its content, so a volume can be listed and verified without extracting it.

- :mod:`dr.archive.writer`: :func:`write_archive`, :func:`fingerprint` (walk a tree, stream it out).
- :mod:`dr.archive.reader`: :func:`extract_archive`, :func:`verify_archive` (stream it back in, refusing
  hostile archives).
- :mod:`dr.archive.index`: :func:`read_index`, :func:`load_index`.
- :mod:`dr.archive.globs`: :func:`path_matcher` for ``--path`` selections.
"""

from __future__ import annotations

from typing import Protocol


class Writable(Protocol):
    """Where archive bytes go: a file, an :class:`~dr.repository.store.ObjectWriter`, a hashing tee."""

    def write(self, data: bytes) -> int:
        """Take all of ``data``; return len(data)."""
        ...
