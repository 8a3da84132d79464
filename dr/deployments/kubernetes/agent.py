"""What runs *inside* a mover pod (``jdr agent …``): one task on the volumes mounted there.

Each task opens the repository from the same ``JDR_…`` settings as the jdr process that started the pod,
does its work, and returns a JSON-able result which :func:`emit_result` writes to the pod's termination
message (where the jdr process reads it). A result larger than the termination message allows (4 KiB)
is written to the repository instead (``data/<run>/results/<key>.json``) and only its key is reported.

No Kubernetes API access is needed here (mover pods run without a ServiceAccount token). Movers run as
the volume's owner; before acting, a volume task checks that it can do its job as that user
(:mod:`.ownership`) and otherwise answers ``{"status": "wrong-user", …}`` without touching anything, so
that the jdr process runs it again as the right user (or, for a volume of several owners, privileged).

A mover that only writes the repository (a backup, a hub capture) gets no decryption key, only the public
recipients (``JDR_AGENT_RECIPIENTS``): :class:`SealOnly` encrypts to them and cannot read anything back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

from dr.archive.globs import exact_matcher
from dr.archive.index import load_index
from dr.archive.writer import write_archive
from dr.crypto.age import AgeWriter, Recipient
from dr.deployments.base import VolumeRestore
from dr.deployments.hubdb_swap import swap_in_database
from dr.deployments.kubernetes.ownership import (
    check_readable,
    check_writable,
    identity,
    index_owners,
    tree_owners,
)
from dr.deployments.kubernetes.safe_home import HomeRefused, fd_path, open_home
from dr.deployments.self_restore import check_self_service, swap_in_file
from dr.deployments.volume_backup import ALWAYS_EXCLUDED, backup_tree
from dr.deployments.volume_read import open_for_restore
from dr.deployments.volume_swap import restore_into
from dr.errors import JdrError, UsageError
from dr.hubdb.capture import capture_database, inspect_database
from dr.model import Artifact, VolumeItem
from dr.repository import layout
from dr.repository.artifacts import drain
from dr.repository.repository import Repository

log = logging.getLogger(__name__)

RESULT_LIMIT = 3800  # bytes; the kubelet keeps at most 4096 of a termination message
RECIPIENTS_ENV = "JDR_AGENT_RECIPIENTS"  # public age recipients of movers that only write (comma-separated)


class SealOnly:
    """An encryptor that can only encrypt (to public recipients): what a backup mover holds."""

    def __init__(self, recipients: list[Recipient]) -> None:
        self._recipients = recipients
        self.extra: list[Recipient] = []

    @property
    def fingerprints(self) -> list[str]:
        return []  # holds no identity

    def writer(self, sink: Any, recipients: Any = None) -> AgeWriter:
        """Encrypt to the repository's recipients when given (they include the installation key), else to
        the public recipients this mover was given."""
        return AgeWriter(sink, list(recipients) if recipients else self._recipients)

    def reader(self, src: Any) -> Any:
        raise UsageError("this mover holds no decryption key (it only writes the repository)")

    def range_reader(self, fetch: Any, size: int) -> Any:
        return self.reader(None)


def seal_only_from_env(environ: dict[str, str] | None = None) -> SealOnly | None:
    """A :class:`SealOnly` from ``JDR_AGENT_RECIPIENTS``, or None when the variable is not set."""
    text = (os.environ if environ is None else environ).get(RECIPIENTS_ENV, "")
    recipients = [Recipient.parse(r) for r in text.split(",") if r.strip()]
    return SealOnly(recipients) if recipients else None


def result_key(run: str, key: str) -> str:
    """Where a result too large for a termination message goes (removed by the jdr process once read)."""
    return f"{layout.run_data_prefix(run)}results/{key}.json"


def emit_result(result: dict[str, Any], repo: Repository | None, run: str, key: str, path: Path) -> None:
    text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > RESULT_LIMIT and repo is not None:
        k = result_key(run, key)
        repo.store.put(k, text.encode())
        text = json.dumps({"result_key": k})
    try:
        path.write_text(text)
    except OSError as e:  # outside a pod (a manual run): the result goes to stdout only
        log.debug("cannot write the result to %s: %s", path, e)
    print(text, flush=True)


# --- tasks -----------------------------------------------------------------------------------------------


def backup_volume(repo: Repository, *, run: str, key: str, root: Path, excludes: tuple[str, ...], level: int,
                  threads: int, previous_fingerprint: str | None) -> dict[str, Any]:
    """Archive the volume at ``root``. Never raises for the volume's own problems: returns a failed result."""
    started = time.monotonic()
    notes: list[str] = []
    owner = _owner(root)
    verdict = check_readable(root, *identity())
    if not verdict.ok:
        return {**verdict.to_result(), "seconds": time.monotonic() - started}
    try:  # a volume that a killed restore left half swapped is a failed item (backup_tree refuses it)
        tree = backup_tree(root, repo, run, key, excludes=excludes, level=level, threads=threads,
                           previous_fingerprint=previous_fingerprint)
    except JdrError as e:
        return {"status": "failed", "error": str(e), "seconds": time.monotonic() - started}
    except OSError as e:
        return {"status": "failed", "error": f"{e.strerror or e}: {e.filename or root}",
                "seconds": time.monotonic() - started}
    return {"status": "ok", "unchanged": tree.unchanged, "fingerprint": tree.fingerprint, "files": tree.files,
            "bytes": tree.bytes, "archive": tree.archive.to_dict() if tree.archive else None,
            "index": tree.index.to_dict() if tree.index else None, "warnings": notes + list(tree.warnings),
            "owner": owner, "seconds": time.monotonic() - started}


def backup_volumes(repo: Repository, *, run: str, volumes: list[tuple[str, Path, str | None]],
                   excludes: tuple[str, ...], level: int, threads: int,
                   homes: Sequence[tuple[str, Path, str, str | None]] = ()) -> dict[str, Any]:
    """Archive several volumes of one batch mover, one after the other: ``(key, root, previous fingerprint)``
    each, and homes of a shared (static) volume mounted whole: ``(key, volume root, subPath, previous
    fingerprint)``, each opened safely (:func:`.safe_home.open_home`: never through a link). Each gets its own
    archive and its own result (``{"status": "batch", "volumes": {key: result}}``); one volume's failure is
    its result only, never the batch's."""
    results: dict[str, Any] = {}
    for key, root, previous in volumes:
        try:
            results[key] = backup_volume(repo, run=run, key=key, root=root, excludes=excludes, level=level,
                                         threads=threads, previous_fingerprint=previous)
        except Exception as e:  # isolate the volume: the others of the batch go on
            results[key] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    for key, root, sub, previous in homes:
        started = time.monotonic()
        try:
            fd = open_home(root, sub)
        except HomeRefused as e:  # a link, a file, another device
            results[key] = {"status": "failed", "error": str(e), "seconds": time.monotonic() - started}
            continue
        except OSError as e:  # missing, unreadable
            error = f"{e.strerror or e}: {sub} on the shared volume"
            results[key] = {"status": "failed", "error": error, "seconds": time.monotonic() - started}
            continue
        try:
            results[key] = backup_volume(repo, run=run, key=key, root=fd_path(fd), excludes=excludes,
                                         level=level, threads=threads, previous_fingerprint=previous)
        except Exception as e:
            results[key] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        finally:
            os.close(fd)
    return {"status": "batch", "volumes": results}


def list_dirs(*, root: Path, dirs: tuple[str, ...]) -> dict[str, Any]:
    """The entries of each directory ``dirs`` (relative to ``root``, the shared home volume): name -> "dir",
    "link" (a symlink, never followed), or "other". A directory that does not exist lists as absent."""
    found: dict[str, dict[str, str]] = {}
    base = root.resolve()
    for rel in dirs:
        path, linked = base, False
        for part in Path(rel).parts:
            path = path / part
            linked = linked or path.is_symlink()
        if linked:
            continue  # a directory reached through a link lies outside what the layout names
        try:
            with os.scandir(path) as it:
                entries = {e.name: ("link" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False)
                                    else "other") for e in it}
        except (FileNotFoundError, NotADirectoryError):
            continue
        found[rel] = dict(sorted(entries.items()))
    return {"status": "ok", "dirs": found}


def _owner(root: Path) -> list[int] | None:
    """uid and gid of the volume root (recorded, so that the next mover starts as that user)."""
    try:
        st = root.stat()
    except OSError:
        return None
    return [st.st_uid, st.st_gid]


def restore_volume(repo: Repository, item: VolumeItem, *, root: Path, paths: tuple[str, ...], into: str | None,
                   keep_previous: bool, exact_paths: tuple[str, ...] = ()) -> dict[str, Any]:
    """Restore ``item``'s archive into the volume at ``root`` (staged, then swapped)."""
    if item.archive is None or item.index is None:
        raise UsageError(f"{item.label}: the item has no archive to restore")
    with repo.open_artifact(item.index) as raw_index:
        index = load_index(raw_index)
        drain(raw_index)
    if exact_paths:
        try:
            exact = exact_matcher(exact_paths)
        except ValueError as e:
            raise UsageError(str(e)) from e
        selected = [e for e in index.values() if exact(e)]
    else:
        selected = list(index.values()) if not paths else [e for e in index.values() if _selected(e.name, paths)]
    verdict = check_writable(root, index_owners(selected), *identity())
    if not verdict.ok:
        return verdict.to_result()
    with open_for_restore(repo, item.archive, index, paths, exact_paths) as archive:
        res = restore_into(root, archive.stream, run=item.archive.run or "run", index=index, paths=paths,
                           into=into, keep_previous=keep_previous, exact_paths=exact_paths,
                           drain=drain if archive.whole else None, compressed=archive.compressed)
    return {"status": "ok", "files": res.files, "bytes": res.bytes, "previous": res.previous}


def restore_new_files(repo: Repository, item: VolumeItem, *, root: Path, into: str, paths: tuple[str, ...],
                      exact_paths: tuple[str, ...], replace_file: bool) -> dict[str, Any]:
    """A self-service restore beside a running server (``VolumeRestore.while_running``): create the selected
    entries under ``into`` (which must not exist) as this mover's user, then, with ``replace_file``, rename
    the current file aside and the restored one into its place. Nothing existing is replaced or removed,
    no link is followed (the local adapter's code: :mod:`dr.deployments.self_restore`). Refuses to run as
    root: the files must be created as the user, whatever owners the archive recorded."""
    if item.archive is None or item.index is None:
        raise UsageError(f"{item.label}: the item has no archive to restore")
    if os.geteuid() == 0:
        raise UsageError("a self-service restore mover runs as the user, never as root")
    with repo.open_artifact(item.index) as raw_index:
        index = load_index(raw_index)
        drain(raw_index)
    req = VolumeRestore(item=item, target_user=item.user, target_server=item.server, paths=paths, into=into,
                        exact_paths=exact_paths, while_running=True, replace_file=replace_file)
    check_self_service(req, index)
    run = item.archive.run or "run"
    with repo.open_artifact(item.archive) as archive:
        res = restore_into(root, archive, run=run, index=index, paths=paths, into=into, exact_paths=exact_paths,
                           drain=drain)
    if replace_file:
        kept = swap_in_file(root, into, exact_paths[0], run)
        return {"status": "ok", "files": res.files, "bytes": res.bytes, "target": exact_paths[0], "previous": kept}
    return {"status": "ok", "files": res.files, "bytes": res.bytes, "target": into, "previous": None}


def _selected(name: str, paths: tuple[str, ...]) -> bool:
    return any(name == p.strip("/") or name.startswith(p.strip("/") + "/") for p in paths)


def copy_home(*, source: Path, sub: str, root: Path, run: str, paths: tuple[str, ...], into: str | None,
              keep_previous: bool) -> dict[str, Any]:
    """:func:`copy_volume` from the home ``sub`` of a shared volume mounted whole at ``source`` (a PVC made
    from a snapshot of it), opened safely (:func:`.safe_home.open_home`): a home that was a link in the
    snapshot is refused, never followed to a sibling's."""
    fd = open_home(source, sub)
    try:
        return copy_volume(source=fd_path(fd), root=root, run=run, paths=paths, into=into,
                           keep_previous=keep_previous)
    finally:
        os.close(fd)


def copy_volume(*, source: Path, root: Path, run: str, paths: tuple[str, ...], into: str | None,
                keep_previous: bool) -> dict[str, Any]:
    """Restore from another mounted volume (a PVC made from a snapshot) with the same staged swap.

    The source tree is streamed through the archive writer into the archive reader (an in-memory pipe,
    nothing staged twice), so selections, safety checks and the swap are exactly those of an archive.
    """
    uid, groups = identity()
    verdict = check_readable(source, uid, groups)
    if verdict.ok:
        owners = tree_owners(source)
        if paths:
            owners = [o for o in owners if _selected(o[0], paths)]
        verdict = check_writable(root, owners, uid, groups)
    if not verdict.ok:
        return verdict.to_result()
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        class _Null:
            def write(self, data: bytes) -> int:
                return len(data)

        try:
            with open(write_fd, "wb", buffering=1 << 20) as out:
                write_archive(source, out, _Null(), excludes=ALWAYS_EXCLUDED, level=1)
        except BaseException as e:  # reported after the reader stops
            failure.append(e)

    producer = threading.Thread(target=produce, name="copy-producer", daemon=True)
    producer.start()
    try:
        with open(read_fd, "rb") as stream:
            try:
                res = restore_into(root, stream, run=run, index=None, paths=paths, into=into,
                                   keep_previous=keep_previous, drain=drain)
            except BaseException:
                if failure:
                    raise failure[0] from None
                raise
    finally:
        producer.join()
    if failure:
        raise failure[0]
    return {"status": "ok", "files": res.files, "bytes": res.bytes, "previous": res.previous}


def capture_hub_db(repo: Repository, *, run: str, path: Path, level: int) -> dict[str, Any]:
    """Copy the live hub DB consistently (SQLite online backup) and store it as the run's hub DB artifact."""
    import zstandard

    with tempfile.TemporaryDirectory(prefix="jdr-hubdb-") as tmp:
        copy = Path(tmp) / "jupyterhub.sqlite"
        info = capture_database(path, copy)
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with repo.artifact_writer(layout.hub_db_key(run, repo.encrypted), run) as w, open(copy, "rb") as f, \
                cctx.stream_writer(cast(IO[bytes], w), closefd=False) as z:
            shutil.copyfileobj(f, z, 1 << 20)
    return {"status": "ok", "artifact": w.artifact.to_dict(), "revision": info.revision,
            "integrity": info.integrity, "size": info.size, "users": len(info.users)}


def restore_hub_db(repo: Repository, *, artifact: Artifact, path: Path) -> dict[str, Any]:
    """Download the hub DB artifact, check it, and swap it in at ``path`` (the old one kept beside it)."""
    with tempfile.TemporaryDirectory(prefix="jdr-hubdb-") as tmp:
        db_file = Path(tmp) / "jupyterhub.sqlite"
        repo.download_decompressed(artifact, db_file)
        info = inspect_database(db_file)
        previous = swap_in_database(path, db_file)
    st = path.stat()
    return {"status": "ok", "previous": previous, "revision": info.revision, "integrity": info.integrity,
            "size": info.size, "uid": st.st_uid, "gid": st.st_gid}
