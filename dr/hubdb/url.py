"""Where a hub database lives, from the SQLAlchemy URL JupyterHub is configured with (``db_url``).

``sqlite:///path``, ``postgresql[+driver]://user:password@host:port/database`` (``postgres://`` too) and
``mysql[+driver]://…`` (MariaDB is ``mysql`` to SQLAlchemy; ``mariadb://`` is accepted). The password may
sit in the URL (as z2jh renders ``hub.db.url``) or come separately (z2jh's ``hub.db.password``, an
environment variable): :meth:`DbUrl.with_password`. Nothing here ever prints a password: ``redacted()``
is what errors and logs show.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, replace
from typing import Literal

from dr.errors import ConfigError

DbKind = Literal["sqlite", "postgresql", "mysql"]

_SCHEMES: dict[str, DbKind] = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql",
                               "mysql": "mysql", "mariadb": "mysql"}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


@dataclass(frozen=True)
class DbUrl:
    """A parsed hub database URL. ``path`` is set for SQLite; the others for a database server."""

    kind: DbKind
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    database: str = ""
    path: str = ""
    socket: str = ""  # a unix socket directory (PostgreSQL ``?host=/dir``) or file (MySQL ``?unix_socket=``)

    def __repr__(self) -> str:  # never a password, not even in a traceback's locals
        return f"DbUrl({self.redacted()!r})"

    def with_password(self, password: str) -> DbUrl:
        return replace(self, password=password)

    def with_database(self, database: str) -> DbUrl:
        return replace(self, database=database)

    def redacted(self) -> str:
        """The URL with the password replaced by ``***`` (what logs and errors show)."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        auth = urllib.parse.quote(self.user, safe="") + (":***" if self.password else "")
        where = self.host + (f":{self.port}" if self.port else "")
        tail = f"?socket={self.socket}" if self.socket else ""
        return f"{self.kind}://{auth}@{where}/{self.database}{tail}"


def parse_db_url(url: str, *, setting: str = "deployment.hub_db_url") -> DbUrl:
    """Parse ``url``; ConfigError (exit 2) naming ``setting`` for one jdr cannot use. The message shows
    the URL redacted."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.split("+", 1)[0].lower()
    kind = _SCHEMES.get(scheme)
    safe = _redact_raw(url)
    if kind is None:
        raise ConfigError(f"{setting}: {safe!r} is not a database URL jdr knows",
                          hint="sqlite:///path, postgresql://user@host:5432/db or mysql://user@host:3306/db")
    if kind == "sqlite":
        path = url.strip().split(":///", 1)[1] if ":///" in url else ""
        if not path:
            raise ConfigError(f"{setting}: {safe!r} names no SQLite file", hint="sqlite:///path/jupyterhub.sqlite")
        return DbUrl(kind="sqlite", path=urllib.parse.unquote(path.split("?", 1)[0]))
    query = dict(urllib.parse.parse_qsl(parts.query))
    socket = query.get("host", "") if kind == "postgresql" else query.get("unix_socket", "")
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"{setting}: {safe!r} names no database", hint="…://user@host:port/DATABASE")
    try:
        port = parts.port or 0
    except ValueError:
        raise ConfigError(f"{setting}: {safe!r} has an invalid port") from None
    if not parts.hostname and not socket:
        raise ConfigError(f"{setting}: {safe!r} names no host")
    return DbUrl(kind=kind, host=parts.hostname or "", port=port or DEFAULT_PORTS[kind],
                 user=urllib.parse.unquote(parts.username or ""),
                 password=urllib.parse.unquote(parts.password or ""), database=database, socket=socket)


def _redact_raw(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.password is None:
        return url.strip()
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def from_z2jh_values(values: dict[str, object], password: str | None = None) -> DbUrl | None:
    """The hub database a z2jh release configures: its ``hub.db`` values (from the ``values.yaml`` key of
    the ``hub`` Secret z2jh renders) and the Secret's ``hub.db.password``. None for ``sqlite-pvc`` (the
    default) and ``sqlite-memory``; a :class:`DbUrl` for ``postgres``/``mysql`` (z2jh's jupyterhub_config.py
    sets the password as ``PGPASSWORD``/``MYSQL_PWD`` in the hub's environment, not in ``hub.db.url``);
    ConfigError (exit 2, naming the value) for a type or URL jdr cannot use."""
    hub = values.get("hub") if isinstance(values.get("hub"), dict) else {}
    db = hub.get("db") if isinstance(hub, dict) and isinstance(hub.get("db"), dict) else {}
    assert isinstance(db, dict)
    kind = str(db.get("type") or "sqlite-pvc")
    if kind in ("sqlite-pvc", "sqlite-memory"):
        return None
    if kind not in ("postgres", "mysql", "other"):
        raise ConfigError(f"hub.db.type: {kind!r} is not a z2jh database type jdr knows")
    url = str(db.get("url") or "")
    if not url:
        raise ConfigError(f"hub.db.url: empty for hub.db.type {kind}", hint="z2jh requires hub.db.url")
    parsed = parse_db_url(url, setting="hub.db.url")
    if parsed.kind == "sqlite":
        raise ConfigError("hub.db.url: an SQLite URL with hub.db.type other; jdr backs up sqlite-pvc hubs only")
    return parsed.with_password(password) if password and not parsed.password else parsed
