"""What a server hub DB mover runs (``jdr agent capture-server-hub-db`` / ``restore-server-hub-db``): the
PostgreSQL/MySQL adapters of :mod:`dr.hubdb` inside the pod, the dump shipped to (or read from) the
repository like a volume mover's archive.

The password comes from the environment (``JDR_HUB_DB_PASSWORD``, a ``secretKeyRef`` to the hub Secret:
:mod:`.hubdb_server`); the URL on the command line has none. A result describes the database (users, servers
with their spawner state, alembic revision, server version) so that the jdr process needs no database access:
:func:`info_to_doc`/:func:`info_from_doc`. Results larger than a termination message go through the
repository (:func:`dr.deployments.kubernetes.agent.emit_result`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, cast

from dr.errors import IntegrityError, UsageError
from dr.hubdb.connect import server_database
from dr.hubdb.info import DbInfo, ServerInfo
from dr.hubdb.server import ServerHubDb
from dr.hubdb.url import parse_db_url
from dr.model import Artifact
from dr.repository import layout
from dr.repository.repository import Repository
from dr.util.timefmt import iso, parse_iso

log = logging.getLogger(__name__)

PASSWORD_ENV = "JDR_HUB_DB_PASSWORD"  # noqa: S105 - a name; as dr.deployments.kubernetes.hubdb_server.PASSWORD_ENV


def open_database(url_text: str, environ: dict[str, str] | None = None) -> ServerHubDb:
    """The adapter for ``url_text`` with the password from ``JDR_HUB_DB_PASSWORD`` (when set)."""
    url = parse_db_url(url_text)
    if url.kind == "sqlite":
        raise UsageError("a server hub DB mover was given an SQLite URL")
    password = (os.environ if environ is None else environ).get(PASSWORD_ENV, "")
    return server_database(url.with_password(password) if password else url)


def info_to_doc(info: DbInfo) -> dict[str, Any]:
    return {"revision": info.revision, "integrity": info.integrity, "size": info.size, "users": list(info.users),
            "kind": info.kind, "server_version": info.server_version, "dump_format": info.dump_format,
            "servers": [{"user": s.user, "server": s.server, "state": s.state, "pvc_name": s.pvc_name,
                         "started": iso(s.started) if s.started else None,
                         "last_activity": iso(s.last_activity) if s.last_activity else None,
                         "running": s.running} for s in info.servers]}


def info_from_doc(doc: dict[str, Any]) -> DbInfo:
    servers = [ServerInfo(user=str(s["user"]), server=str(s.get("server") or ""), state=dict(s.get("state") or {}),
                          pvc_name=s.get("pvc_name") or None,
                          started=parse_iso(s["started"]) if s.get("started") else None,
                          last_activity=parse_iso(s["last_activity"]) if s.get("last_activity") else None,
                          running=bool(s.get("running"))) for s in doc.get("servers") or []]
    return DbInfo(revision=doc.get("revision"), integrity=str(doc.get("integrity") or "ok"),
                  size=int(doc.get("size") or 0), users=[str(u) for u in doc.get("users") or []], servers=servers,
                  kind=str(doc.get("kind") or "postgresql"), server_version=doc.get("server_version"),
                  dump_format=str(doc.get("dump_format") or "pg_dump-custom"))


def capture_server_hub_db(repo: Repository, *, run: str, url_text: str, level: int) -> dict[str, Any]:
    """Dump the hub database with its own tool and store the compressed dump as ``run``'s hub DB artifact."""
    import zstandard

    db = open_database(url_text)
    with tempfile.TemporaryDirectory(prefix="jdr-hubdb-") as tmp:
        dump = Path(tmp) / "jupyterhub.dump"
        info = db.capture(dump)
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with repo.artifact_writer(layout.hub_db_key(run, repo.encrypted, info.dump_format), run) as w, \
                open(dump, "rb") as f, cctx.stream_writer(cast(IO[bytes], w), closefd=False) as z:
            shutil.copyfileobj(f, z, 1 << 20)
    return {"status": "ok", "artifact": w.artifact.to_dict(), "info": info_to_doc(info)}


def check_server_hub_db(*, url_text: str) -> dict[str, Any]:
    """Whether the hub database can be reached and holds tables (a restore's decision, made before the hub is
    stopped)."""
    db = open_database(url_text)
    return {"status": "ok", "empty": db.is_empty()}


def restore_server_hub_db(repo: Repository, *, artifact: Artifact, url_text: str, replace: bool = False,
                          scratch: str = "") -> dict[str, Any]:
    """Load the run's dump into the hub database (refused when it holds tables, unless ``replace``: then
    they are set aside), or into a new database ``scratch`` that is dropped again once inspected (a drill).
    Returns what the restored database holds (``info``) and where the old tables went (``previous``)."""
    db = open_database(url_text)
    with tempfile.TemporaryDirectory(prefix="jdr-hubdb-") as tmp:
        dump = Path(tmp) / "jupyterhub.dump"
        repo.download_decompressed(artifact, dump)
        db.check_dump(dump)
        if scratch:
            target = db.create_scratch(scratch)
            try:
                target.restore(dump)
                info = target.inspect()
            finally:
                dropped = _drop(target)
            return {"status": "ok", "info": info_to_doc(info), "previous": "", "scratch": scratch,
                    "dropped": dropped}
        previous = db.restore(dump, replace=replace)
        info = db.inspect()
    if info.integrity != "ok":
        raise IntegrityError(f"the restored hub database is not healthy: {info.integrity}")
    return {"status": "ok", "info": info_to_doc(info), "previous": previous}


def _drop(target: ServerHubDb) -> bool:
    """Drop a drill's scratch database; a failure is logged (the name says whose leftover it is)."""
    try:
        target.drop()
    except Exception as e:  # never hide the drill's own outcome behind the clean-up's
        log.error("could not drop the drill's scratch database %s: %s", target.url.redacted(), e)
        return False
    return True
