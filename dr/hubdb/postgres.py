"""The hub database on PostgreSQL, backed up and restored with PostgreSQL's own tools.

Backup is ``pg_dump --format=custom`` (one consistent snapshot, whatever the hub writes meanwhile); restore
is ``pg_restore --single-transaction --exit-on-error --no-owner --no-privileges`` into the database the URL
names, so a failed restore leaves nothing half-loaded and the restored objects belong to the restoring
user (the hub's own user, in the usual setup). Connection parameters and the password go to the tools
through libpq's environment (``PGHOST``, ``PGPASSWORD`` …), never on a command line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dr.errors import UsageError
from dr.hubdb.info import DbInfo
from dr.hubdb.server import ServerHubDbBase, info_from_json, login_refused, require_tool, run_tool, unreachable
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

_UNREACHABLE = ("could not connect", "connection refused", "could not translate host name", "timeout expired",
                "no such file or directory", "network is unreachable", "does not exist")
_REFUSED = ("password authentication failed", "no password supplied", "no pg_hba.conf entry",
            "authentication failed")


class PostgresHubDb(ServerHubDbBase):
    """A :class:`dr.hubdb.server.ServerHubDb` for PostgreSQL."""

    kind = "postgresql"
    dump_format = "pg_dump-custom"
    kept_as = "a schema jdr_previous_<time>"

    def inspect(self) -> DbInfo:
        tables = self._tables()
        if "users" not in tables or "spawners" not in tables:
            raise UsageError(f"{self.url.redacted()} is not a JupyterHub database (no users table)",
                             hint="check the database name in deployment.hub_db_url")
        revision = "(SELECT max(version_num) FROM alembic_version)" if "alembic_version" in tables else "NULL"
        doc = self._query(
            "SELECT json_build_object("  # noqa: S608 - constant fragments only
            "'users', (SELECT coalesce(json_agg(name), '[]'::json) FROM users), "
            "'servers', (SELECT coalesce(json_agg(json_build_object('user', u.name, 'name', s.name, "
            "'state', s.state, 'server_id', s.server_id, 'started', s.started, "
            "'last_activity', s.last_activity)), '[]'::json) FROM spawners s JOIN users u ON s.user_id = u.id), "
            f"'revision', {revision}, 'size', pg_database_size(current_database()), "
            "'version', current_setting('server_version'))")
        meta = json.loads(doc)
        return info_from_json(doc, size=int(meta.get("size") or 0), kind=self.kind,
                              version=str(meta.get("version") or ""), dump_format=self.dump_format)

    def create_scratch(self, name: str) -> PostgresHubDb:
        self._query(f"CREATE DATABASE {_ident(name)}")
        return PostgresHubDb(self.url.with_database(name))

    def list_scratch(self) -> list[str]:
        out = self._query("SELECT datname FROM pg_database WHERE datname LIKE 'jdr\\_drill\\_%' ORDER BY 1")
        return [line for line in out.splitlines() if line]

    def drop(self) -> None:
        admin = PostgresHubDb(self.url.with_database("postgres"))
        admin._query(f"DROP DATABASE IF EXISTS {_ident(self.url.database)}")

    # --- internals -------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {"PGHOST": self.url.socket or self.url.host, "PGPORT": str(self.url.port),
               "PGDATABASE": self.url.database, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "jdr"}
        if self.url.user:
            env["PGUSER"] = self.url.user
        if self.url.password:
            env["PGPASSWORD"] = self.url.password
        return env

    def _classify(self, err: str) -> Exception | None:
        low = err.lower()
        if any(s in low for s in _REFUSED):
            return login_refused(self.url, err)
        if any(s in low for s in _UNREACHABLE) and "connection to server" in low:
            return unreachable(self.url, err)
        return None

    def _run(self, *argv: str, what: str) -> str:
        return run_tool(argv, env=self._env(), url=self.url, what=what, classify=self._classify)

    def _query(self, sql: str) -> str:
        return self._run(require_tool("psql", "postgresql-client"), "-X", "-q", "-A", "-t", "--no-password",
                         "-v", "ON_ERROR_STOP=1", "-c", sql, what="query the hub database").strip()

    def _dump(self, dest: Path) -> None:
        self._run(require_tool("pg_dump", "postgresql-client"), "--format=custom", "--no-password",
                  f"--file={dest}", self.url.database, what="dump the hub database")

    def _load(self, dump: Path) -> None:
        self._run(require_tool("pg_restore", "postgresql-client"), "--single-transaction", "--exit-on-error",
                  "--no-owner", "--no-privileges", "--no-password", f"--dbname={self.url.database}", str(dump),
                  what="restore the hub database")

    def _tables(self) -> list[str]:
        out = self._query("SELECT table_name FROM information_schema.tables "
                          "WHERE table_schema = current_schema() ORDER BY 1")
        return [line for line in out.splitlines() if line]

    def _set_aside(self, tables: list[str]) -> str:
        # One transaction: the schema is renamed and an empty one made in its place, or nothing happens.
        schema = self._query("SELECT current_schema()")
        kept = f"jdr_previous_{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
        self._run(require_tool("psql", "postgresql-client"), "-X", "-q", "--no-password", "-1",
                  "-v", "ON_ERROR_STOP=1",
                  "-c", f"ALTER SCHEMA {_ident(schema)} RENAME TO {_ident(kept)}; CREATE SCHEMA {_ident(schema)}",
                  what="set the current hub tables aside")
        return f"schema {kept} of {self.url.redacted()}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
