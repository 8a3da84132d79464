"""The ``local`` deployment: a hub on one machine (TLJH and similar), and the embedded default.

The hub DB is a file; homes are directories from a template such as ``/home/jupyter-{username}``; the hub
is stopped and started with configured commands. Users come from the hub DB's ``users`` table, joined
with the homes that exist.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dr.archive.frames import CompressionPool, worker_count
from dr.deployments.base import BackupContext, Volume, VolumeRestore, VolumeRestoreResult
from dr.deployments.home_names import HomeLayout
from dr.deployments.hubdb_swap import swap_in_database
from dr.deployments.restore_checks import check_local_restore, restore_owner_map
from dr.deployments.reuse import decide_reuse
from dr.deployments.self_restore import check_self_service, swap_in_file
from dr.deployments.volume_backup import ALWAYS_EXCLUDED, backup_tree
from dr.deployments.volume_swap import restore_into
from dr.errors import ConfigError, DeploymentError, IntegrityError, JdrError, UsageError
from dr.hubdb.capture import capture_database, inspect_database
from dr.hubdb.connect import password_from_env, server_database
from dr.hubdb.info import DbInfo
from dr.hubdb.server import ServerHubDb
from dr.hubdb.url import parse_db_url
from dr.model import VolumeItem, volume_key
from dr.repository.artifacts import drain
from dr.repository.repository import Repository
from dr.settings import DeploymentSettings
from dr.util.procs import pids_with_links
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

__all__ = ["ALWAYS_EXCLUDED", "LocalDeployment"]


class LocalDeployment:
    """A :class:`dr.deployments.base.Deployment` for a hub on this machine."""

    kind = "local"
    #: Homes restored at once by ``restore --all``. Each home's frames already decompress in parallel
    #: (dr/archive/parallel.py), so two at a time keep two CPUs busy; four only added memory (5 homes of
    #: the benchmark corpus: peak RSS 175-190 MiB at 4, 145-152 MiB at 2, wall time no worse).
    restore_concurrency = 2

    def __init__(self, settings: DeploymentSettings) -> None:
        #: The hub DB on a database server (PostgreSQL, MySQL/MariaDB), or None for an SQLite file.
        self.server_db: ServerHubDb | None = None
        self._replace_hub_db = False  # decided by prepare_hub_restore, acted on by restore_hub_database
        hub_db = settings.hub_db
        if settings.hub_db_url:
            if settings.hub_db:
                raise ConfigError("deployment.hub_db and deployment.hub_db_url: give one of them")
            url = parse_db_url(settings.hub_db_url)
            if url.kind == "sqlite":
                hub_db = url.path
            else:
                self.server_db = server_database(password_from_env(url, settings.hub_db_password_env))
        elif not settings.hub_db:
            raise UsageError("deployment.hub_db: required for a local deployment",
                             hint="or deployment.hub_db_url for a hub on PostgreSQL or MySQL")
        self.layout = HomeLayout.parse(settings.homes)
        self.ignore_homes = list(settings.ignore_homes)
        relative = [p for p in self.ignore_homes if not os.path.isabs(p)]
        if relative:
            raise ConfigError(f"deployment.ignore_homes: {relative[0]!r} is not an absolute path or glob",
                             hint="e.g. ignore_homes: [/home/ubuntu, '/home/admin-*']")
        self.settings = settings
        self.db_path = Path(hub_db)

    def describe(self) -> dict[str, Any]:
        if self.server_db is not None:
            return {"kind": self.kind, "hub_db_url": self.server_db.url.redacted(), "homes": self.layout.template}
        return {"kind": self.kind, "hub_db": str(self.db_path), "homes": self.layout.template}

    def home_of(self, user: str) -> Path:
        return self.layout.home_of(user)

    # --- the hub ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hub_database(self) -> Iterator[tuple[Path, DbInfo]]:
        with tempfile.TemporaryDirectory(prefix="jdr-hubdb-") as tmp:
            if self.server_db is not None:
                dump = Path(tmp) / "jupyterhub.dump"
                yield dump, self.server_db.capture(dump)
                return
            copy = Path(tmp) / "jupyterhub.sqlite"
            info = capture_database(self.db_path, copy)
            yield copy, info

    def hub_secret(self) -> bytes | None:
        return None

    def hub_running(self) -> bool:
        if self.server_db is not None:  # no file to watch: the configured stop command is trusted
            return False
        return bool(_processes_using(self.db_path))

    def stop_hub(self) -> None:
        if self.settings.stop_hub:
            _run(self.settings.stop_hub, "stop the hub")
        if self.server_db is not None:
            return
        deadline = time.monotonic() + 60
        while (users := _processes_using(self.db_path)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if users:
            raise DeploymentError(
                f"the hub database {self.db_path} is in use by process {', '.join(map(str, users))}",
                hint="stop the hub first, or set deployment.stop_hub to a command that stops it")

    def start_hub(self) -> None:
        cmd = self.settings.start_hub or self.settings.restart_hub
        if cmd:
            _run(cmd, "start the hub")
        else:
            log.warning("no deployment.start_hub or restart_hub configured: start the hub yourself")

    def prepare_hub_restore(self, info: DbInfo, *, replace: bool = False) -> None:
        """Refuse, before the hub is stopped, a run whose hub DB this hub cannot take: a dump of another
        kind of database, or (server DB) a database that holds tables unless ``replace``."""
        mine = self.server_db.dump_format if self.server_db is not None else "sqlite"
        if info.dump_format != mine:
            raise UsageError(f"the run's hub database is {info.kind} ({info.dump_format}); this hub's is "
                             f"{self.server_db.url.kind if self.server_db else 'sqlite'}",
                             hint="restore it by hand (docs/FORMAT.md) or configure deployment.hub_db_url")
        if self.server_db is not None and not replace and not self.server_db.is_empty():
            raise UsageError(f"the hub database {self.server_db.url.redacted()} is not empty; nothing was "
                             "restored", hint="restore into an empty database, or pass --replace-hub-db")
        self._replace_hub_db = replace

    def restore_hub_database(self, db_file: Path, info: DbInfo) -> str:
        """Swap ``db_file`` in; the old database (with its -wal/-shm) is kept beside it. A server DB is
        loaded with its tool (into an empty database, or replacing as decided by prepare_hub_restore), and
        the restored users are checked against the run's."""
        if self.server_db is None:
            return swap_in_database(self.db_path, db_file)
        previous = self.server_db.restore(db_file, replace=self._replace_hub_db)
        restored = self.server_db.inspect()
        if sorted(restored.users) != sorted(info.users):
            raise IntegrityError(f"the restored hub database has users {restored.users}; the run recorded "
                                 f"{info.users}", hint="the dump does not match its manifest; try another run")
        return previous

    def restore_hub_secret(self, data: bytes) -> None:
        raise UsageError("a local deployment has no hub Secret")

    # --- volumes ---------------------------------------------------------------------------------

    def volumes(self, db: DbInfo) -> list[Volume]:
        """Every hub user's home (existing or not: a user without one is recorded as absent), then the
        orphans: homes of the layout that belong to no hub user, each its own volume without a user."""
        found = []
        homes: set[str] = set()
        for user in db.users:
            try:
                home = self.home_of(user)
            except UsageError as e:
                log.warning("skipping user %r: %s", user, e)
                continue
            homes.add(os.path.normpath(home))
            server = db.server(user)
            found.append(Volume(
                key=volume_key(user), user=user, source={"path": str(home), "exists": home.is_dir()},
                running=bool(server and server.running),
                last_activity=server.last_activity if server else None))
        orphans = [p for p in self.layout.scan() if os.path.normpath(p) not in homes and not self._ignored(p)]
        if orphans:
            log.warning("%d home directories belong to no hub user (backed up as orphans): %s", len(orphans),
                        ", ".join(map(str, orphans[:20])))
        found += [orphan_volume(p) for p in orphans]
        return found

    def _ignored(self, home: Path) -> bool:
        """Named in ``deployment.ignore_homes`` (an administrator's own account, not a hub home)."""
        path = os.path.normpath(home)
        return any(fnmatch.fnmatchcase(path, os.path.normpath(pattern)) for pattern in self.ignore_homes)

    def server_running(self, user: str, server: str = "") -> bool:
        """Per the hub DB; when the DB cannot be read (the disaster being recovered from), whether any
        process works inside the user's home (its current directory or an open file is there)."""
        try:
            info = self.server_db.inspect() if self.server_db is not None else inspect_database(self.db_path)
        except JdrError as e:
            home = self.home_of(user)
            pids = _processes_inside(home)
            log.warning("cannot read the hub database (%s); processes inside %s: %s", e, home,
                        ", ".join(map(str, pids)) or "none")
            return bool(pids)
        s = info.server(user, server)
        return bool(s and s.running)

    def backup_volumes(self, volumes: Sequence[Volume], ctx: BackupContext) -> Iterator[VolumeItem]:
        """One item per volume, in the order of ``volumes``. Up to ``ctx.parallel_volumes`` homes are
        archived at once (each in its own thread: reading, hashing and compression release the GIL),
        since one home alone leaves cores idle; each item is yielded as soon as it and those before it
        are done, and every volume started is finished before this returns, even when the caller stops.

        Homes start largest first by the previous run's sizes (:func:`start_order`). All volumes share one
        compression pool of ``backup.threads`` workers (0: one per CPU) in all, not per volume: when a
        home finishes, its workers go on with the others' frames, so the last home gets every core, and
        the frames held in memory are bounded across the homes."""
        workers = max(1, min(ctx.parallel_volumes, len(volumes)))
        with CompressionPool(worker_count(ctx.threads if ctx.threads > 0 else -1)) as compress:
            if workers == 1:
                for vol in volumes:
                    yield self._backup_one(vol, ctx, compress)
                return
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jdr-backup") as pool:
                started = {i: pool.submit(self._backup_one, volumes[i], ctx, compress)
                           for i in start_order(volumes, ctx)}
                futures = [started[i] for i in range(len(volumes))]
                try:
                    for future in futures:
                        yield future.result()
                finally:
                    for future in futures:
                        future.cancel()  # the caller stopped (an error, ^C): start no further volume

    def _backup_one(self, vol: Volume, ctx: BackupContext, compress: CompressionPool | None = None) -> VolumeItem:
        started = time.monotonic()
        home = Path(vol.source["path"])
        base = VolumeItem(key=vol.key, user=vol.user, server=vol.server, method="archive",
                          source=_recorded_source(vol))
        prev = _previous_item(ctx, vol)
        try:
            os.lstat(home)
        except FileNotFoundError:
            if not self.layout.base.is_dir():  # a wrong template, not a user without a home
                return _replace(base, status="failed", error=f"{self.layout.base} does not exist; check "
                                f"deployment.homes ({self.layout.template})")
            # A user who never logged in has no home and nothing to lose: absent, not failed. A home that
            # exists but cannot be read (not a directory, no permission) still fails.
            gone = (f"the home {home} was backed up in run {ctx.previous.run if ctx.previous else '?'} "
                    "and is gone now",) if prev is not None and prev.status == "ok" else ()
            if gone:
                log.warning("%s: %s", vol.label, gone[0])
            return _replace(base, status="absent", warnings=gone, seconds=time.monotonic() - started)
        except OSError as e:
            return _replace(base, status="failed", error=f"{e.strerror or e}: {home}")
        if not home.is_dir():
            return _replace(base, status="failed", error=f"home {home} is not a directory")
        try:
            reusable = decide_reuse(ctx, prev, vol.label).reusable
            tree = backup_tree(home, ctx.repo, ctx.run, vol.key, excludes=ctx.excludes, level=ctx.level,
                               threads=ctx.threads, progress=ctx.progress, pool=compress,
                               previous_fingerprint=prev.fingerprint if reusable and prev else None)
            if tree.unchanged and prev is not None:
                log.info("%s: unchanged since run %s, referencing its archive", vol.label,
                         prev.reused_from or ctx.previous.run if ctx.previous else "")
                return _replace(prev, source=_recorded_source(vol),
                                reused_from=prev.reused_from or (ctx.previous.run if ctx.previous else None),
                                seconds=time.monotonic() - started, warnings=())
            return _replace(base, archive=tree.archive, index=tree.index, fingerprint=tree.fingerprint,
                            files=tree.files, bytes=tree.bytes, warnings=tree.warnings,
                            seconds=time.monotonic() - started)
        except JdrError as e:
            log.error("%s: backup failed: %s", vol.label, e)
            return _replace(base, status="failed", error=str(e), seconds=time.monotonic() - started)
        except OSError as e:
            log.error("%s: backup failed: %s", vol.label, e)
            return _replace(base, status="failed", error=f"{e.strerror or e}: {e.filename or home}",
                            seconds=time.monotonic() - started)

    def check_volume_restore(self, req: VolumeRestore) -> None:
        """Refuse, before anything is done, a restore that cannot be: see
        :func:`dr.deployments.restore_checks.check_local_restore`."""
        check_local_restore(req, self._target_home(req), self.db_path)

    def restore_volume(self, req: VolumeRestore, repo: Repository) -> VolumeRestoreResult:
        from dr.archive.index import load_index
        from dr.deployments.volume_read import open_for_restore

        item = req.item
        if item.archive is None or item.index is None:
            raise DeploymentError(f"{item.label}: the run holds no archive of this volume")
        home = self._target_home(req)
        if not home.is_dir():
            parent_ok = home.parent.is_dir()
            if not parent_ok:
                raise DeploymentError(f"cannot create {home}: {home.parent} does not exist")
            home.mkdir(mode=0o755)
        with repo.open_artifact(item.index) as raw_index:
            index = load_index(raw_index)
            drain(raw_index)
        check_self_service(req, index)
        with open_for_restore(repo, item.archive, index, req.paths, req.exact_paths) as archive:
            result = restore_into(home, archive.stream, run=item.archive.run or "run", index=index,
                                  paths=req.paths, into=req.into, keep_previous=req.keep_previous,
                                  exact_paths=req.exact_paths, drain=drain if archive.whole else None,
                                  progress=req.progress, map_owner=restore_owner_map(req, home),
                                  compressed=archive.compressed)
        if req.replace_file and req.into:
            path = req.exact_paths[0]
            kept = swap_in_file(home, req.into, path, utcnow().strftime("%Y%m%dT%H%M%SZ"))
            return VolumeRestoreResult(target=str(home / path), files=result.files, bytes=result.bytes,
                                       previous=str(home / kept) if kept else None)
        target = home / req.into if req.while_running and req.into else home
        return VolumeRestoreResult(target=str(target), files=result.files, bytes=result.bytes,
                                   previous=result.previous)


    def _target_home(self, req: VolumeRestore) -> Path:
        """The target user's home; for an orphan home (no user), the directory it was backed up from,
        which must still be a home of this layout (a manifest naming any other path is refused)."""
        if req.target_user is not None:
            return self.home_of(req.target_user)
        path = req.item.source.get("path")
        if not req.item.source.get("orphan") or not isinstance(path, str) or not self.layout.matches(path):
            raise DeploymentError(f"{req.item.label}: not a home directory of deployment.homes "
                                  f"({self.layout.template}); a local deployment restores only homes")
        return Path(os.path.normpath(path))


def orphan_volume(home: Path) -> Volume:
    """An orphan home: a directory of the layout that belongs to no hub user."""
    return Volume(key=volume_key(None, home=str(home)), user=None, source={"path": str(home), "orphan": True})


def _recorded_source(vol: Volume) -> dict[str, Any]:
    """What the manifest records as the item's source: the path (and whether it is an orphan)."""
    return {k: v for k, v in vol.source.items() if k in ("path", "orphan")}


def start_order(volumes: Sequence[Volume], ctx: BackupContext) -> list[int]:
    """The positions of ``volumes`` in the order to start archiving them when several go at once: those
    the previous run does not know first (new homes, or a first backup: in their given order), then the
    others by the bytes the previous run read, largest first, so that the home left to finish alone at
    the end of a run is a small one."""
    sizes = [(prev.bytes if (prev := _previous_item(ctx, v)) is not None and prev.status == "ok" else -1)
             for v in volumes]
    return sorted(range(len(volumes)), key=lambda i: (sizes[i] >= 0, -sizes[i], i))


def _previous_item(ctx: BackupContext, vol: Volume) -> VolumeItem | None:
    """The same volume in the previous run: by user and server, or (orphans) by key."""
    if ctx.previous is None:
        return None
    if vol.user is not None:
        return ctx.previous.volume_for(vol.user, vol.server)
    return next((v for v in ctx.previous.volumes if v.user is None and v.key == vol.key), None)


def _replace(item: VolumeItem, **changes: Any) -> VolumeItem:
    from dataclasses import replace

    return replace(item, **changes)


def _run(cmd: list[str], what: str) -> None:
    log.info("running %s to %s", cmd[0], what)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DeploymentError(f"could not {what} with {cmd[0]}: {e}") from e
    if proc.returncode != 0:
        raise DeploymentError(f"could not {what}: {cmd[0]} exited with {proc.returncode}: "
                              f"{proc.stderr.strip()[-500:]}")


def _processes_inside(root: Path) -> list[int]:
    """Pids of processes whose current directory, or an open file, is inside ``root``."""
    try:
        prefix = os.path.realpath(root).rstrip("/") + "/"
    except OSError:
        return []
    return pids_with_links(lambda target: (target + "/").startswith(prefix), cwd=True)


def _processes_using(path: Path) -> list[int]:
    """Pids of processes that have ``path`` open."""
    try:
        target = os.path.realpath(path)
    except OSError:
        return []
    return pids_with_links(lambda link: link == target)
