"""A drill of a run whose hub database is a PostgreSQL/MySQL dump, on Kubernetes: the dump (downloaded and
checked by the drill process) is restored into a new scratch database on the hub's own database server,
inspected with the checks of a restore (users, revision), and dropped.

Why in the drill process and not in a mover: a drill never creates anything in the production namespace,
and the password lives in the production ``hub`` Secret (key ``hub.db.password``), which a pod in the
drill namespace cannot reference. jdr already reads that Secret (it backs it up), so the drill process
reads the one key, keeps it in memory only, and runs ``pg_restore``/``mariadb`` itself (jdr's image has
them), exactly as a drill of a local hub does. The scratch database is named by
:func:`dr.deployments.kubernetes.hubdb_server.scratch_name` (``jdr_drill_<drill>``), so that a crashed
drill's leftover is recognisable.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from dr.deployments.drill import Leftover
from dr.deployments.kubernetes.api import SECRETS, Kube
from dr.deployments.kubernetes.discovery import find_hub
from dr.deployments.kubernetes.hubdb_server import PASSWORD_KEY, scratch_name
from dr.errors import DeploymentError, IntegrityError, UsageError
from dr.hubdb.connect import server_database
from dr.hubdb.info import DbInfo
from dr.hubdb.server import ServerHubDb, scratch_drill
from dr.settings import Settings

log = logging.getLogger(__name__)


def production_server(kube: Kube, settings: Settings) -> ServerHubDb | None:
    """The production hub's database server, with the password read from the hub Secret (kept in memory
    only); None when the hub keeps its database in SQLite."""
    hub = find_hub(kube, settings.deployment.kubernetes, settings.deployment.hub_db_url)
    db = hub.server_db
    if db is None:
        return None
    url = db.url
    if db.secret:
        secret = kube.get(SECRETS, db.secret)
        raw = ((secret.get("data") or {}).get(PASSWORD_KEY)) or ""
        url = url.with_password(base64.b64decode(raw).decode())
    return server_database(url)


def scratch_leftovers(server: ServerHubDb, own: str) -> list[Leftover]:
    """The scratch databases of other drills on ``server`` (``own``: this drill's id, never listed); the
    drill's sweep (dr.operations.drill_sweep) decides by the repository's drill locks which to drop."""
    found = []
    for name in server.list_scratch():
        drill = scratch_drill(name)
        if drill is None or drill == own:
            continue
        found.append(Leftover(where=f"database {server.scratch(name).url.redacted()}", drill=drill,
                              details={"database": name}))
    return found


def drop_scratch(server: ServerHubDb, leftover: Leftover) -> None:
    """Drop a scratch database :func:`scratch_leftovers` found; refuses any other name."""
    name = str(leftover.details.get("database") or "")
    if scratch_drill(name) is None:
        raise DeploymentError(f"{leftover.where} is not a jdr drill's scratch database; refusing to drop it")
    server.scratch(name).drop()
    log.warning("dropped the scratch database %s of drill %s, which never cleaned up", name, leftover.drill)


def drill_server_db(kube: Kube, settings: Settings, dump: Path, recorded: DbInfo, drill: str) -> DbInfo:
    """Restore ``dump`` into a scratch database beside the production hub's, inspect it, drop it; returns
    what it held. Raises UsageError when the production hub has no database server of the dump's kind."""
    server = production_server(kube, settings)
    if server is None or server.dump_format != recorded.dump_format:
        raise UsageError(f"the run's hub database is a {recorded.kind} dump; a drill restores it into a scratch "
                         "database on the hub's database server, and the hub in "
                         f"{kube.namespace} has none of that kind",
                         hint="set deployment.hub_db_url to the server to drill on")
    server.check_dump(dump)
    name = scratch_name(drill)
    scratch = server.create_scratch(name)
    log.info("drill %s: restoring the hub database into the scratch database %s", drill, scratch.url.redacted())
    try:
        scratch.restore(dump)
        restored = scratch.inspect()
    finally:
        try:
            scratch.drop()
        except Exception as e:  # the drill's own outcome first; the name says whose leftover it is
            log.error("could not drop the drill's scratch database %s: %s", scratch.url.redacted(), e)
    if sorted(restored.users) != sorted(recorded.users):
        raise IntegrityError(f"the restored hub database has {len(restored.users)} users; the run recorded "
                             f"{len(recorded.users)}")
    return restored
