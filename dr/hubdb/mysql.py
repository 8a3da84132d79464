"""The hub database on MySQL or MariaDB, backed up and restored with the server's own client tools.

Backup is ``mysqldump --single-transaction --routines --events`` (one consistent InnoDB snapshot without
locking the hub out), without ``--databases`` so the dump loads into any database name (drills load it into
a scratch one). Restore is ``mysql`` reading the dump (not one transaction: MySQL commits each CREATE TABLE).
``--replace-hub-db`` first moves every current table into a new database ``<database>_jdr_replaced_<time>``
with one ``RENAME TABLE`` (all or none), so nothing is dropped; the hub's user then needs
:data:`SET_ASIDE_PRIVILEGES` as well as its own database's. Credentials go to both tools through a
``--defaults-extra-file`` of mode 0600 in a private temporary directory, never on a command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from dr.errors import DeploymentError, JdrError, UsageError
from dr.hubdb.info import DbInfo
from dr.hubdb.server import ServerHubDbBase, info_from_json, login_refused, require_tool, run_tool, unreachable
from dr.util.timefmt import utcnow

log = logging.getLogger(__name__)

_UNREACHABLE = ("can't connect", "unknown mysql server host", "unknown server host", "lost connection")
_REFUSED = ("access denied for user",)


class MysqlHubDb(ServerHubDbBase):
    """A :class:`dr.hubdb.server.ServerHubDb` for MySQL and MariaDB."""

    kind = "mysql"
    dump_format = "mysqldump-sql"
    kept_as = "a database <database>_jdr_replaced_<time>"

    def inspect(self) -> DbInfo:
        tables = self._tables()
        if "users" not in tables or "spawners" not in tables:
            raise UsageError(f"{self.url.redacted()} is not a JupyterHub database (no users table)",
                             hint="check the database name in deployment.hub_db_url")
        revision = "(SELECT MAX(version_num) FROM alembic_version)" if "alembic_version" in tables else "NULL"
        doc = self._query(
            "SELECT JSON_OBJECT("  # noqa: S608 - constant fragments only
            "'users', (SELECT JSON_ARRAYAGG(name) FROM users), "
            "'servers', (SELECT JSON_ARRAYAGG(JSON_OBJECT('user', u.name, 'name', s.name, 'state', s.state, "
            "'server_id', s.server_id, 'started', s.started, 'last_activity', s.last_activity)) "
            "FROM spawners s JOIN users u ON s.user_id = u.id), "
            f"'revision', {revision}, "
            "'size', (SELECT SUM(data_length + index_length) FROM information_schema.tables "
            "WHERE table_schema = DATABASE()), 'version', VERSION())")
        meta = json.loads(doc)
        return info_from_json(doc, size=int(meta.get("size") or 0), kind=self.kind,
                              version=str(meta.get("version") or ""), dump_format=self.dump_format)

    def create_scratch(self, name: str) -> MysqlHubDb:
        self._query(f"CREATE DATABASE {_ident(name)} CHARACTER SET utf8mb4")
        return MysqlHubDb(self.url.with_database(name))

    def list_scratch(self) -> list[str]:
        out = self._query("SELECT schema_name FROM information_schema.schemata "
                          "WHERE schema_name LIKE 'jdr\\_drill\\_%' ORDER BY 1")
        return [line for line in out.splitlines() if line]

    def drop(self) -> None:
        self._query(f"DROP DATABASE IF EXISTS {_ident(self.url.database)}")

    # --- internals -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _defaults_file(self) -> Iterator[str]:
        lines = ["[client]", f"user={_opt(self.url.user)}", f"password={_opt(self.url.password)}"]
        if self.url.socket:
            lines.append(f"socket={_opt(self.url.socket)}")
        else:
            lines += [f"host={_opt(self.url.host)}", f"port={self.url.port}", "protocol=TCP"]
        with tempfile.TemporaryDirectory(prefix="jdr-mysql-") as tmp:
            path = os.path.join(tmp, "client.cnf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            yield path

    def _classify(self, err: str) -> Exception | None:
        low = err.lower()
        if any(s in low for s in _REFUSED) and "using password" in low:
            return login_refused(self.url, err)
        if any(s in low for s in _UNREACHABLE):
            return unreachable(self.url, err)
        if "unknown database" in low:
            return unreachable(self.url, err)
        return None

    def _run(self, tool: str, *args: str, what: str, stdin: object = None, stdout: object = None) -> str:
        with self._defaults_file() as cnf:
            # --defaults-extra-file must be the first option.
            return run_tool([tool, f"--defaults-extra-file={cnf}", *args], env={}, url=self.url, what=what,
                            stdin=stdin, stdout=stdout, classify=self._classify)

    def _query(self, sql: str) -> str:
        return self._run(_tool("mariadb", "mysql"), "--connect-timeout=10", "--batch", "--skip-column-names", "--raw",
                         "--default-character-set=utf8mb4", "-e", sql, self.url.database,
                         what="query the hub database").strip()

    def _dump(self, dest: Path) -> None:
        with open(dest, "wb") as out:
            self._run(_tool("mariadb-dump", "mysqldump"), "--single-transaction", "--routines", "--events",
                      "--triggers", "--hex-blob", "--default-character-set=utf8mb4", self.url.database,
                      what="dump the hub database", stdout=out)

    def _load(self, dump: Path) -> None:
        with open(dump, "rb") as f:
            self._run(_tool("mariadb", "mysql"), "--default-character-set=utf8mb4", self.url.database,
                      what="restore the hub database", stdin=f)

    def _tables(self) -> list[str]:
        out = self._query("SELECT table_name FROM information_schema.tables "
                          "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1")
        return [line for line in out.splitlines() if line]

    def _set_aside(self, tables: list[str]) -> str:
        # MySQL has no schema to rename within a database: the tables move into a new database, all in
        # one RENAME TABLE statement (atomic: every table moves, or none; foreign keys follow them).
        kept = replaced_name(self.url.database, utcnow())
        here = _ident(self.url.database)
        moves = ", ".join(f"{here}.{_ident(t)} TO {_ident(kept)}.{_ident(t)}" for t in tables)
        created = False
        try:
            self._query(f"CREATE DATABASE {_ident(kept)} CHARACTER SET utf8mb4")
            created = True
            self._query(f"RENAME TABLE {moves}")
        except JdrError as e:
            if created:
                with contextlib.suppress(JdrError):
                    self._query(f"DROP DATABASE IF EXISTS {_ident(kept)}")  # empty: nothing moved
            raise DeploymentError(f"could not set the current tables of {self.url.redacted()} aside; they "
                                  f"are in place and nothing was restored: {e}",
                                  hint=f"the hub's database user needs {SET_ASIDE_PRIVILEGES}") from e
        return f"database {kept} ({self.url.with_database(kept).redacted()})"


#: What ``--replace-hub-db`` needs beyond the hub's own database (errors and docs say it).
SET_ASIDE_PRIVILEGES = ("CREATE, ALTER, DROP and INSERT on `<database>\\_jdr\\_replaced\\_%`.* (e.g. GRANT ALL "
                        "PRIVILEGES ON `jupyterhub\\_jdr\\_replaced\\_%`.* TO the hub's user)")


def replaced_name(database: str, now: datetime) -> str:
    """The database ``--replace-hub-db`` moves ``database``'s tables into: ``<database>_jdr_replaced_<UTC
    time>``, the database's name shortened to fit MySQL's 64 characters."""
    suffix = "_jdr_replaced_" + now.strftime("%Y%m%d%H%M%S")
    return database[:64 - len(suffix)] + suffix


def _tool(*names: str) -> str:
    import shutil

    for name in names:
        if shutil.which(name):
            return name
    return require_tool(names[-1], "mariadb-client")


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _opt(value: str) -> str:
    # Option files take a value in double quotes with backslash escapes.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
