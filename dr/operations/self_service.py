"""Self-service restore (``jdr serve``, issue 13): what a hub user may see of their backups, and the
downloads and restores they may start. The web layer (dr/serve) decides *who* asks; this module never
takes a user name from anywhere else than its caller, and addresses files by run, server and entry id
(the entry's position in the run's index), never by a client's path.

Everything here reads the repository only (manifests, indexes, archives); restores go through the
deployment port (:meth:`dr.deployments.base.Deployment.restore_volume` with ``while_running``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from dr.archive.globs import exact_matcher
from dr.archive.index import read_index
from dr.archive.tarfmt import member_name
from dr.archive.tarstream import TarStream
from dr.catalog import Catalog
from dr.deployments.base import Deployment, VolumeRestore, VolumeRestoreResult
from dr.errors import IntegrityError, NotFoundError, UsageError
from dr.model import IndexEntry, Manifest, VolumeItem
from dr.operations.inspect import synced_catalog
from dr.repository.artifacts import drain
from dr.repository.repository import Repository

log = logging.getLogger(__name__)

_INDEX_CACHE = 16  # indexes kept in memory (by artifact key: a reused index is shared by many runs)


class TooLargeError(UsageError):
    """A self-service request above the configured size limit: an administrator does it (``jdr restore``)."""


@dataclass(frozen=True)
class UserVolume:
    """One run holding one of the user's volumes (one per server name)."""

    run: str
    started: datetime
    server: str
    files: int
    bytes: int
    reused_from: str | None


@dataclass(frozen=True)
class Version:
    """One version of a file across runs: same path and content."""

    path: str
    size: int
    mtime: float
    sha256: str
    server: str
    runs: tuple[tuple[str, int], ...]  # (run, entry id) newest first


class SelfService:
    """The user-facing view of one repository. Thread-safe for reads; manifests and indexes are cached
    (they are immutable: a run id names one manifest for ever, an artifact key one content)."""

    def __init__(self, open_repo: Callable[[], tuple[Repository, Catalog]], deployment: Deployment) -> None:
        """``open_repo()`` opens the repository and its catalog; called at first use, and again after a
        failure (a service may start before the first backup has created the repository)."""
        self._open_repo = open_repo
        self._repo: tuple[Repository, Catalog] | None = None
        self.deployment = deployment
        self._lock = threading.Lock()
        self._manifests: dict[str, Manifest] = {}
        self._indexes: OrderedDict[str, list[IndexEntry]] = OrderedDict()

    def _opened(self) -> tuple[Repository, Catalog]:
        with self._lock:
            if self._repo is None:
                self._repo = self._open_repo()
            return self._repo

    @property
    def repo(self) -> Repository:
        return self._opened()[0]

    @property
    def catalog(self) -> Catalog:
        return self._opened()[1]

    # --- reading ------------------------------------------------------------------------------------

    def manifest(self, run: str) -> Manifest:
        with self._lock:
            cached = self._manifests.get(run)
        if cached is not None:
            return cached
        if run not in self.repo.run_ids():
            raise NotFoundError(f"no run {run!r}")
        manifest = self.repo.load_manifest(run)
        with self._lock:
            self._manifests[run] = manifest
        return manifest

    def volumes_of(self, user: str) -> list[UserVolume]:
        """The runs holding a usable (indexed) volume of ``user``, one row per server, newest first."""
        repo, catalog = self._opened()
        with self._lock:
            rows = synced_catalog(repo, catalog).runs(user=user)
        out: list[UserVolume] = []
        for row in rows:
            manifest = self.manifest(row.id)
            for v in manifest.volumes:
                if v.user == user and _usable(v):
                    out.append(UserVolume(run=row.id, started=manifest.started, server=v.server,
                                          files=v.files, bytes=v.bytes, reused_from=v.reused_from))
        return out

    def volume(self, user: str, run: str, server: str) -> tuple[Manifest, VolumeItem]:
        """``user``'s volume of ``server`` in ``run``; NotFoundError for anything else (another user's run
        is "not found" too: nothing tells whether it exists)."""
        manifest = self.manifest(run)
        item = manifest.volume_for(user, server)
        if item is None or not _usable(item):
            raise NotFoundError(f"run {run!r} holds no backup of your files")
        return manifest, item

    def entries(self, item: VolumeItem) -> list[IndexEntry]:
        """The volume's index, in archive order (entry id = position); the root entry is id 0."""
        assert item.index is not None
        key = item.index.key
        with self._lock:
            cached = self._indexes.get(key)
            if cached is not None:
                self._indexes.move_to_end(key)
                return cached
        with self.repo.open_artifact(item.index) as src:
            entries = list(read_index(src))
            drain(src)
        with self._lock:
            self._indexes[key] = entries
            while len(self._indexes) > _INDEX_CACHE:
                self._indexes.popitem(last=False)
        return entries

    def entry(self, item: VolumeItem, entry_id: int) -> IndexEntry:
        entries = self.entries(item)
        if not 0 < entry_id < len(entries):
            raise NotFoundError(f"no entry {entry_id} in this backup")
        return entries[entry_id]

    def search(self, user: str, text: str, limit: int = 200) -> list[Version]:
        """Every version of the files of ``user`` whose name contains ``text`` (case-insensitive), across
        all their runs: one row per (server, path, content), newest first."""
        needle = text.strip().casefold()
        if not needle:
            return []
        versions: dict[tuple[str, bytes, str], Version] = {}
        order: list[tuple[str, bytes, str]] = []
        for uv in self.volumes_of(user):
            _, item = self.volume(user, uv.run, uv.server)
            for i, e in enumerate(self.entries(item)):
                if e.type != "file" or needle not in os.path.basename(e.name).casefold():
                    continue
                k = (uv.server, e.path, e.sha256)
                found = versions.get(k)
                if found is None:
                    if len(order) >= limit:
                        continue
                    order.append(k)
                    versions[k] = Version(path=e.name, size=e.size, mtime=e.mtime, sha256=e.sha256,
                                          server=uv.server, runs=((uv.run, i),))
                else:
                    versions[k] = Version(path=found.path, size=found.size, mtime=found.mtime,
                                          sha256=found.sha256, server=found.server,
                                          runs=(*found.runs, (uv.run, i)))
        return [versions[k] for k in order]

    def selection(self, item: VolumeItem, entry_id: int) -> tuple[IndexEntry, list[IndexEntry]]:
        """The entry ``entry_id`` and the entries a download or restore of it covers (itself, and for a
        directory everything under it)."""
        top = self.entry(item, entry_id)
        select = exact_matcher([top.path])
        return top, [e for e in self.entries(item) if select(e)]

    # --- downloading --------------------------------------------------------------------------------

    def read_files(self, manifest: Manifest, item: VolumeItem, wanted: Sequence[IndexEntry],
                   progress: Callable[[int, int], None] | None = None
                   ) -> Iterator[tuple[IndexEntry, Iterator[bytes]]]:
        """Yield each regular file of ``wanted`` (index entries of ``item``) with its content, read from
        the whole archive in one pass (range reads come with the seekable archive). Each file's content
        is checked against the index's SHA-256 as it ends: IntegrityError after its last chunk on a
        mismatch (a streaming consumer must then abort what it sent). The consumer must exhaust each
        content iterator before asking for the next file. ``progress(archive bytes read, total)``."""
        self.repo.require_authentic(manifest)
        assert item.archive is not None
        by_path = {e.path: e for e in wanted if e.type == "file"}
        if not by_path:
            return
        total = item.archive.size
        with self.repo.open_artifact(item.archive) as raw:
            counted = _Counting(raw, total, progress)
            stream = TarStream(counted)  # type: ignore[arg-type]
            remaining = len(by_path)
            for member in stream:
                path = member_name(member)
                entry = by_path.get(path)
                if entry is None or not member.isfile():
                    continue
                yield entry, _checked(stream.chunks(member), entry)
                remaining -= 1
                if remaining == 0:
                    return  # the rest of the archive is not needed
        if remaining:
            raise IntegrityError(f"{remaining} file(s) of the index are missing from the archive")

    # --- restoring ----------------------------------------------------------------------------------

    def restore(self, user: str, manifest: Manifest, item: VolumeItem, top: IndexEntry, *, into_base: str,
                tz: tzinfo, replace: bool = False, limit: int = 0,
                progress: Callable[[int, int], None] | None = None) -> VolumeRestoreResult:
        """Restore ``top`` (a file, or a directory with everything under it) of ``user``'s volume into
        ``<into_base>/<run date>/<path>`` of their home, creating new files only (their server may run);
        ``replace``: a single file over the current one, which is kept beside it. Refuses (TooLargeError)
        a selection of more than ``limit`` bytes (0: no limit)."""
        self.repo.require_authentic(manifest)
        _, chosen = self.selection(item, self.entries(item).index(top))
        size = sum(e.size for e in chosen if e.type == "file")
        if limit and size > limit:
            raise TooLargeError(f"{top.name} holds {size} bytes, more than self-service restores may "
                                f"({limit}); ask an administrator",
                                hint="an administrator restores it with `jdr restore --user … --path …`")
        if replace and top.type != "file":
            raise UsageError("only a single file can replace the current one")
        day = manifest.started.astimezone(tz).strftime("%Y-%m-%d")
        last: UsageError | None = None
        for n in range(1, 50):
            into = f"{into_base}/{day}" + (f"-{n}" if n > 1 else "")
            req = VolumeRestore(item=item, target_user=user, target_server=item.server, into=into,
                                exact_paths=(top.name,), while_running=True, replace_file=replace,
                                progress=progress)
            try:
                return self.deployment.restore_volume(req, self.repo)
            except UsageError as e:
                # The only refusal that a new name cures: restore_into's "into … already exists".
                if "already exists" not in e.message:
                    raise
                last = e
        assert last is not None
        raise last


def _usable(item: VolumeItem) -> bool:
    return item.status == "ok" and item.index is not None and item.archive is not None


def _checked(chunks: Iterator[bytes], entry: IndexEntry) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if entry.sha256 and digest.hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.name}: content does not match the index (SHA-256)")


class _Counting:
    """A reader that reports how many bytes of the (decrypted) archive were read."""

    def __init__(self, raw: object, total: int, progress: Callable[[int, int], None] | None) -> None:
        self._raw = raw
        self._total = total
        self._progress = progress
        self._done = 0
        self._reported = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)  # type: ignore[attr-defined]
        self._done += len(data)
        if self._progress is not None and (self._done - self._reported >= 1 << 20 or not data):
            self._reported = self._done
            self._progress(self._done, self._total)
        return data

    def readinto(self, b: bytearray) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True
