"""What a JupyterHub database says about its users and their servers, read with plain ``sqlite3``.

JupyterHub (``jupyterhub/orm.py``) keeps one row per user in ``users`` and one row per server in
``spawners`` (``name`` is ``""`` for the default server). A spawner whose ``server_id`` is set is running
(or starting). ``spawners.state`` is the spawner's own JSON; KubeSpawner ≥ 7 keeps ``pvc_name`` there, which
is the only reliable way from a user to their volume. JupyterHub stores times as naive UTC.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class ServerInfo:
    """One server (spawner row) of one user."""

    user: str  # raw JupyterHub username
    server: str = ""  # "" for the default server
    state: dict[str, Any] = field(default_factory=dict)  # the spawner's state, {} when none
    pvc_name: str | None = None  # state["pvc_name"] when the spawner recorded one (KubeSpawner)
    started: datetime | None = None  # UTC-aware
    last_activity: datetime | None = None  # UTC-aware
    running: bool = False  # the hub believes the server is running (spawners.server_id is set)

    @property
    def label(self) -> str:
        return f"{self.user}:{self.server}" if self.server else self.user


@dataclass(frozen=True)
class DbInfo:
    """A summary of one hub database (a file, or a database on a server): schema revision, health, users
    and servers, and for a server database its version and the format of its dump."""

    revision: str | None  # alembic revision, None when the database has no alembic_version table
    integrity: str  # "ok", or the first problems PRAGMA integrity_check reported
    size: int  # bytes of the database file
    users: list[str] = field(default_factory=list)
    servers: list[ServerInfo] = field(default_factory=list)
    kind: str = "sqlite"  # "sqlite", "postgresql" or "mysql" (dr.hubdb.url.DbKind)
    server_version: str | None = None  # the database server's version (not for SQLite)
    dump_format: str = "sqlite"  # what the artifact holds: "sqlite" (a file), "pg_dump-custom", "mysqldump-sql"

    def servers_of(self, user: str) -> list[ServerInfo]:
        return [s for s in self.servers if s.user == user]

    def server(self, user: str, server: str = "") -> ServerInfo | None:
        for s in self.servers:
            if s.user == user and s.server == server:
                return s
        return None


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def read_revision(conn: sqlite3.Connection) -> str | None:
    """The alembic revision the database is stamped with; None when it has no alembic_version table."""
    if "alembic_version" not in tables(conn):
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row and row[0] is not None else None


def integrity_problems(conn: sqlite3.Connection, limit: int = 10) -> list[str]:
    """The problems PRAGMA integrity_check reports (at most ``limit``); [] when the database is sound."""
    rows = conn.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
    found = [str(r[0]) for r in rows]
    return [] if found == ["ok"] else found


def read_users(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT name FROM users ORDER BY name")]


def read_servers(conn: sqlite3.Connection) -> list[ServerInfo]:
    """Every spawner row joined with its user, ordered by user then server name."""
    columns = _columns(conn, "spawners")
    # Older schemas lack some columns (``started`` came with JupyterHub 1.0); read what exists.
    wanted = ("name", "state", "server_id", "started", "last_activity")
    picked = ", ".join(f"s.{c}" if c in columns else "NULL" for c in wanted)
    sql = f"SELECT u.name, {picked} FROM spawners s JOIN users u ON s.user_id = u.id"  # noqa: S608
    servers: list[ServerInfo] = []
    for user, name, state_text, server_id, started, last_activity in conn.execute(
            sql + " ORDER BY u.name, s.name"):
        state = parse_state(state_text)
        pvc = state.get("pvc_name")
        servers.append(ServerInfo(
            user=str(user), server=str(name or ""), state=state,
            pvc_name=str(pvc) if isinstance(pvc, str) and pvc else None,
            started=parse_time(started), last_activity=parse_time(last_activity),
            running=server_id is not None,
        ))
    return servers


def parse_state(value: object) -> dict[str, Any]:
    """A spawner's state column as a dict: JSON text, or NULL/empty/``null`` for no state.

    A state that is not a JSON object is kept under ``"_raw"`` rather than dropped, so nothing the hub
    stored is silently lost from a report.
    """
    if value is None:
        return {}
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"_raw": text}
    if parsed is None:
        return {}
    return parsed if isinstance(parsed, dict) else {"_raw": parsed}


def parse_time(value: object) -> datetime | None:
    """A time as JupyterHub (SQLAlchemy on SQLite) stores it: naive UTC text. Returns aware UTC, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
