"""A z2jh hub whose database is on a server (``hub.db.type: postgres`` or ``mysql``): where it is, and the
mover pods that dump and restore it with the database's own tools.

Where: z2jh renders ``hub.db`` into the ``values.yaml`` key of the ``hub`` Secret, and ``hub.db.password``
into that Secret's key ``hub.db.password`` (templates/hub/secret.yaml), which the chart's
jupyterhub_config.py reads from the mounted Secret and sets as ``PGPASSWORD``/``MYSQL_PWD`` in the hub's
environment (PyMySQL ignores ``MYSQL_PWD``: see ``_PYMYSQL_HINT``). jdr reads the same two keys; its setting
``deployment.hub_db_url`` overrides the URL (the password still comes from the Secret's key).
``sqlite-memory`` (nothing persists) and a type jdr does not know are refused (exit 2, naming the value).

The password travels only as a Secret reference: the mover pod gets env ``JDR_HUB_DB_PASSWORD`` with
``valueFrom.secretKeyRef`` (the ``hub`` Secret, key ``hub.db.password``). The URL given to the mover on its
command line never holds a password; a ``hub.db.url`` that embeds one is refused (it would land in the pod
spec), with a hint to move it to ``hub.db.password``. Nothing here logs or records a password.

The movers (``jdr agent capture-server-hub-db`` / ``restore-server-hub-db``, :mod:`.hubdb_agent`) need no
volume and run on any node, as the hub's own user (no capabilities).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from dr.deployments.kubernetes.api import SECRETS, Kube, KubeError
from dr.deployments.kubernetes.objects import MoverSpec, Security, short_name
from dr.deployments.kubernetes.storage_layout import values_from_secret
from dr.errors import ConfigError, UsageError
from dr.hubdb.server import scratch_name  # the drills' naming, shared with local drills and their sweep
from dr.hubdb.url import DbUrl, from_z2jh_values, parse_db_url
from dr.model import Artifact

log = logging.getLogger(__name__)

PASSWORD_KEY = "hub.db.password"  # noqa: S105 - a key name; the hub Secret's key z2jh renders hub.db.password into
# z2jh hands hub.db.password to the hub as MYSQL_PWD, which only libmysqlclient reads: PyMySQL (the driver in
# z2jh's hub image) ignores it, so an operator who moves the password out of the URL must pass it on.
_PYMYSQL_HINT = ("; z2jh's hub image connects with PyMySQL, which ignores MYSQL_PWD, so also give the hub "
                 "hub.extraConfig: c.JupyterHub.db_kwargs = {'connect_args': {'password': os.environ['MYSQL_PWD']}}")
PASSWORD_ENV = "JDR_HUB_DB_PASSWORD"  # noqa: S105 - a name; what the mover's container gets it as (secretKeyRef)
DUMP_FORMATS = {"postgresql": "pg_dump-custom", "mysql": "mysqldump-sql"}


@dataclass(frozen=True)
class ServerDb:
    """The hub's database server: its URL (never with a password) and where the password is kept."""

    url: DbUrl  # password always ""
    secret: str = ""  # the Secret holding the password ("" when the database takes none)
    origin: str = "the hub Secret's values.yaml"

    @property
    def dump_format(self) -> str:
        return DUMP_FORMATS[self.url.kind]

    def url_text(self) -> str:
        """The URL as given to a mover's command line (no password: see the module doc)."""
        text = self.url.redacted().split("?", 1)[0]  # no password: nothing is redacted
        if self.url.socket:  # in the query parameter parse_db_url reads back
            text += ("?host=" if self.url.kind == "postgresql" else "?unix_socket=") + self.url.socket
        return text

    def describe(self) -> dict[str, Any]:
        return {"kind": self.url.kind, "url": self.url_text(), "password_secret": self.secret,
                "password_key": PASSWORD_KEY if self.secret else "", "origin": self.origin}


def decide_server_db(values: dict[str, Any] | None, secret: dict[str, Any] | None, secret_name: str,
                     url_setting: str = "") -> ServerDb | None:
    """The hub's server database from the chart ``values`` and the hub Secret (pure); None for an SQLite
    hub on a PVC. ``url_setting`` (``deployment.hub_db_url``) wins over ``hub.db.url``."""
    has_password = PASSWORD_KEY in ((secret or {}).get("data") or {})
    hub_values = (values or {}).get("hub")
    db_values = hub_values.get("db") if isinstance(hub_values, dict) else None
    db_type = str(db_values.get("type") or "sqlite-pvc") if isinstance(db_values, dict) else "sqlite-pvc"
    if url_setting:
        url = parse_db_url(url_setting)
        if url.kind == "sqlite":
            return None
        origin = "jdr's settings (deployment.hub_db_url)"
    else:
        if db_type == "sqlite-memory":
            raise UsageError("hub.db.type: sqlite-memory (from the hub Secret's values.yaml): the hub keeps its "
                             "database in memory, so there is no hub database to back up",
                             hint="run the hub with hub.db.type sqlite-pvc, postgres or mysql")
        try:
            found = from_z2jh_values(values or {})
        except ConfigError as e:
            raise UsageError(f"{e.message} (in the hub Secret's values.yaml)",
                             hint="or set deployment.hub_db_url") from e
        if found is None:
            return None
        url, origin = found, "the hub Secret's values.yaml"
    if url.password:
        raise UsageError(f"{'deployment.hub_db_url' if url_setting else 'hub.db.url'}: the URL holds a password, "
                         "which would reach the mover pod's command line",
                         hint=f"keep the password in hub.db.password (the hub Secret's key {PASSWORD_KEY}) and "
                              "the URL without it" + (_PYMYSQL_HINT if url.kind == "mysql" else ""))
    if not has_password:
        log.info("the hub Secret %s has no key %s: the hub database is reached without a password",
                 secret_name, PASSWORD_KEY)
    return ServerDb(url=url, secret=secret_name if has_password else "", origin=origin)


def discover_server_db(kube: Kube, secret_name: str, url_setting: str = "") -> ServerDb | None:
    """:func:`decide_server_db` from the hub Secret ``secret_name`` as the namespace has it now."""
    secret = None
    if secret_name:
        try:
            secret = kube.get_or_none(SECRETS, secret_name)
        except KubeError as e:
            if not url_setting:
                log.warning("could not read the hub Secret %s (%s): assuming an SQLite hub database", secret_name, e)
                return None
    return decide_server_db(values_from_secret(secret), secret, secret_name, url_setting)


def secret_env(db: ServerDb) -> tuple[tuple[str, str, str], ...]:
    """The mover's password env, as (env name, Secret, key): a ``secretKeyRef``, never a value."""
    return ((PASSWORD_ENV, db.secret, PASSWORD_KEY),) if db.secret else ()


def _no_fs_group(security: Security) -> Security:
    """The hub's user without its fsGroup: these movers mount no volume."""
    return Security(security.profile, uid=security.uid, gid=security.gid)


def capture_spec(db: ServerDb, run: str, level: int, security: Security) -> MoverSpec:
    return MoverSpec(name=short_name("jdr-hubdb", run, "dump"), run=run, role="hub-capture",
                     args=("capture-server-hub-db", "--run", run, "--url", db.url_text(), "--level", str(level)),
                     mounts=(), security=_no_fs_group(security), secret_env=secret_env(db))


def check_spec(db: ServerDb, op: str, security: Security) -> MoverSpec:
    """A mover that tells whether the database is reachable and empty (``{"empty": bool}``)."""
    return MoverSpec(name=short_name("jdr-hubdb", op, "check"), run=op, role="hub-restore",
                     args=("check-server-hub-db", "--run", op, "--url", db.url_text()), mounts=(),
                     security=_no_fs_group(security), secret_env=secret_env(db))


def restore_spec(db: ServerDb, op: str, artifact: Artifact, security: Security, *, replace: bool = False,
                 scratch: str = "") -> MoverSpec:
    """The restore mover: into the hub's database (``replace``: its tables set aside first), or, for a
    drill, into a new database ``scratch`` on the same server that the mover drops again."""
    args = ["restore-server-hub-db", "--run", op, "--url", db.url_text(),
            "--artifact-json", json.dumps(artifact.to_dict(), separators=(",", ":"))]
    if replace:
        args.append("--replace")
    if scratch:
        args += ["--scratch", scratch]
    return MoverSpec(name=short_name("jdr-hubdb", op, "drill" if scratch else "restore"), run=op,
                     role="hub-restore", args=tuple(args), mounts=(), security=_no_fs_group(security), decrypts=True,
                     secret_env=secret_env(db))


__all__ = ["PASSWORD_ENV", "PASSWORD_KEY", "ServerDb", "capture_spec", "check_spec", "decide_server_db",
           "discover_server_db", "restore_spec", "scratch_name", "secret_env"]
