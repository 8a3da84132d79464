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

from dr.deployments.kubernetes.api import SECRETS, Kube
from dr.deployments.kubernetes.discovery import find_hub
from dr.deployments.kubernetes.hubdb_server import PASSWORD_KEY, scratch_name
from dr.errors import IntegrityError, UsageError
from dr.hubdb.connect import server_database
from dr.hubdb.info import DbInfo
from dr.settings import Settings

log = logging.getLogger(__name__)


def drill_server_db(kube: Kube, settings: Settings, dump: Path, recorded: DbInfo, drill: str) -> DbInfo:
    """Restore ``dump`` into a scratch database beside the production hub's, inspect it, drop it; returns
    what it held. Raises UsageError when the production hub has no database server of the dump's kind."""
    hub = find_hub(kube, settings.deployment.kubernetes, settings.deployment.hub_db_url)
    db = hub.server_db
    if db is None or db.dump_format != recorded.dump_format:
        raise UsageError(f"the run's hub database is a {recorded.kind} dump; a drill restores it into a scratch "
                         "database on the hub's database server, and the hub in "
                         f"{kube.namespace} has none of that kind",
                         hint="set deployment.hub_db_url to the server to drill on")
    url = db.url
    if db.secret:
        secret = kube.get(SECRETS, db.secret)
        raw = ((secret.get("data") or {}).get(PASSWORD_KEY)) or ""
        url = url.with_password(base64.b64decode(raw).decode())
    server = server_database(url)
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
