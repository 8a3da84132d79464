"""``file:///path`` repositories: objects are files under a root directory (local disk, NFS).

Writes go to a temporary file under ``<root>/.incomplete/`` and are renamed into place after an
fsync, so a killed process never leaves a partial object under a real key.

A repository holds every home and the hub database: it is private to the user jdr runs as. Directories
jdr creates are 0700 and files 0600, whatever the umask (set explicitly, not left to ``mode & ~umask``);
:meth:`FileStore.exposed` finds what others may read or write anyway (a root made by hand, a chmod), for
``jdr verify`` to warn about.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NoReturn
from urllib.parse import unquote, urlparse

from dr.errors import ObjectNotFound, RepositoryError
from dr.repository.store import ObjectInfo, Retention, check_key

INCOMPLETE_DIR = ".incomplete"
DIR_MODE = 0o700
FILE_MODE = 0o600


class FileStore:
    """A :class:`dr.repository.store.Store` on a local or mounted file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = "file://" + str(root)

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ValueError(f"not a file:// URL: {url!r}")
        return cls(Path(unquote(parsed.path)))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _tmp(self) -> Path:
        tmpdir = self.root / INCOMPLETE_DIR
        try:
            make_private_dirs(tmpdir)
        except OSError as e:
            raise RepositoryError(f"cannot write to repository {self.url}: {e.strerror}") from e
        return tmpdir / f"{uuid.uuid4().hex}.part"

    def put(self, key: str, data: bytes, retention: Retention | None = None) -> None:
        w = self.open_writer(key, retention)
        try:
            w.write(data)
            w.commit()
        except BaseException:
            w.abort()
            raise

    def open_writer(self, key: str, retention: Retention | None = None) -> _FileWriter:
        if retention is not None:
            self._cannot_lock()
        return _FileWriter(self._path(key), self._tmp())

    def get(self, key: str) -> bytes:
        with self.open_reader(key) as f:
            return f.read()

    def open_reader(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
        except OSError as e:
            raise RepositoryError(f"cannot read {key!r} from {self.url}: {e.strerror}") from e

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"invalid range {start}+{length} of {key!r}")
        with self.open_reader(key) as f:
            try:
                out = bytearray()
                while len(out) < length:
                    piece = os.pread(f.fileno(), length - len(out), start + len(out))
                    if not piece:
                        break
                    out += piece
                return bytes(out)
            except OSError as e:
                raise RepositoryError(f"cannot read {key!r} from {self.url}: {e.strerror}") from e

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            if self.root.exists():
                raise RepositoryError(f"repository {self.url} is not a directory")
            return
        # Walk only the directory that can hold the prefix, not the whole repository.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != INCOMPLETE_DIR]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue  # deleted while listing
                    found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda o: o.key)
        yield from found

    # A file system has no Object Lock: the repository never asks for one here (object_lock_enabled is
    # false), and an explicit request is refused rather than silently ignored.
    def object_lock_enabled(self) -> bool:
        return False

    def set_retention(self, key: str, retention: Retention) -> None:
        self._cannot_lock()

    def _cannot_lock(self) -> NoReturn:
        raise RepositoryError(f"{self.url} cannot lock objects: Object Lock is an S3 feature",
                              hint="use an s3:// repository on a bucket with Object Lock enabled")

    def purge(self, key: str) -> int:
        existed = self._path(key).exists()
        self.delete(key)
        return int(existed)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise RepositoryError(f"cannot delete {key!r} from {self.url}: {e.strerror}") from e
        # Remove directories left empty, up to the root.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def cleanup_incomplete(self, older_than: datetime) -> int:
        tmpdir = self.root / INCOMPLETE_DIR
        if not tmpdir.is_dir():
            return 0
        removed = 0
        for p in tmpdir.iterdir():
            try:
                if datetime.fromtimestamp(p.stat().st_mtime, UTC) < older_than:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def close(self) -> None:
        return None

    def exposed(self, limit: int = 3) -> tuple[int, Sequence[str]]:
        """How many directories and files of the repository (its root included) other users may read
        or write (any group or other permission bit), and up to ``limit`` of their paths."""
        return _exposed(self.root, limit)


class _FileWriter:
    def __init__(self, final: Path, tmp: Path) -> None:
        self._final = final
        self._tmp = tmp
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise RepositoryError(f"cannot write {tmp}: {e.strerror}") from e
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off; never added any
            self._f: BinaryIO | None = os.fdopen(fd, "wb")
        except OSError as e:
            os.close(fd)
            raise RepositoryError(f"cannot write {tmp}: {e.strerror}") from e

    def write(self, data: bytes) -> int:
        assert self._f is not None, "write after commit or abort"
        try:
            return self._f.write(data)
        except OSError as e:
            raise _os_error(e, self._final) from e

    def commit(self) -> None:
        assert self._f is not None, "commit after commit or abort"
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            make_private_dirs(self._final.parent)
            os.replace(self._tmp, self._final)
            _fsync_dir(self._final.parent)
        except OSError as e:
            self.abort()
            raise _os_error(e, self._final) from e

    def abort(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def _exposed(root: Path, limit: int) -> tuple[int, list[str]]:
    count = 0
    examples: list[str] = []
    if not root.is_dir():
        return 0, examples
    for dirpath, _dirs, filenames in os.walk(root):
        for name in [None, *filenames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                continue
            count += 1
            if len(examples) < limit:
                examples.append(f"{path} ({stat.filemode(st.st_mode)})")
    return count, examples


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each with mode 0700 whatever the umask. Existing
    directories are left as they are (an administrator's root, or a shared mount point above it)."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made by a concurrent writer, which gave it the same mode
        os.chmod(d, DIR_MODE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(e: OSError, path: Path) -> RepositoryError:
    if e.errno == errno.ENOSPC:
        return RepositoryError(f"no space left on the repository's device writing {path}",
                               hint="free space on the repository's file system, then run again")
    return RepositoryError(f"cannot write {path}: {e.strerror}")
