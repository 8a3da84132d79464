"""The hub database on a server (PostgreSQL, MySQL/MariaDB): the port both adapters implement, and
what they share — running the database's own client tools without ever putting a password on a
command line or in a message, and turning what the database says about the hub into a :class:`DbInfo`.

Contracts of every adapter (:class:`ServerHubDb`):

- ``capture(dest)`` writes a dump made by the database's own tool (``pg_dump --format=custom``,
  ``mysqldump --single-transaction``) to ``dest`` and describes the live database (users, servers,
  alembic revision, server version). ``dest`` exists only when the dump completed.
- ``check_dump(path)`` raises IntegrityError for a file the restore tool would not take.
- ``is_empty()`` is True when the database holds no tables.
- ``restore(dump, replace=False)`` loads a dump into the database, and refuses (UsageError, nothing
  written) a database that holds tables unless ``replace``; with ``replace`` the current tables are
  kept aside first (PostgreSQL: the schema renamed ``jdr_previous_<time>``; MySQL: every table moved
  into a new database ``<db>_jdr_replaced_<time>``), the return value and the log say where, and a load
  that fails afterwards raises an error that says where the previous tables are (they are never dropped).
- ``inspect()`` describes the database as it is now.
- ``create_scratch()``/``drop()`` (drills): a new empty database beside this one, and its removal.
  Drills name theirs :func:`scratch_name` (``jdr_drill_<drill id>``); ``list_scratch()`` lists the
  databases so named on the server (that the hub's user can see), ``scratch(name)`` is the adapter for
  one of them, so that a drill's sweep drops those of dead drills (dr.operations.drill).

Unreachable server → DeploymentError naming the setting (exit 2 is UsageError: see ``unreachable``);
refused login → UsageError that says so. Tool output that could echo a URL is redacted first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dr.errors import ConfigError, DeploymentError, JdrError, UsageError
from dr.hubdb.dumps import check_dump
from dr.hubdb.info import DbInfo, ServerInfo, parse_state, parse_time
from dr.hubdb.url import DbUrl

log = logging.getLogger(__name__)

#: The setting that names the hub database on a server (errors name it).
SETTING = "deployment.hub_db_url"
#: Every drill's scratch database is named so (:func:`scratch_name`); nothing else on the server is.
SCRATCH_PREFIX = "jdr_drill_"
_SCRATCH = re.compile(r"^jdr_drill_(\d{8}t\d{6}z)_([0-9a-f]+)$")


def scratch_name(drill: str) -> str:
    """The scratch database of drill ``drill`` (a run id such as ``20261202T063000Z-a1b2c3``):
    ``jdr_drill_20261202t063000z_a1b2c3`` — lower case, no ``-``, fine as a PostgreSQL and MySQL name."""
    return (SCRATCH_PREFIX + drill).replace("-", "_").lower()


def scratch_drill(name: str) -> str | None:
    """The drill id a :func:`scratch_name` was made from; None for a name that is not one."""
    m = _SCRATCH.match(name)
    return f"{m.group(1).upper()}-{m.group(2)}" if m else None


class ServerHubDb(Protocol):
    """A hub database on a database server; see the module docstring for the contracts."""

    url: DbUrl
    dump_format: str

    def capture(self, dest: Path) -> DbInfo: ...

    def check_dump(self, path: Path) -> None: ...

    def is_empty(self) -> bool: ...

    def restore(self, dump: Path, *, replace: bool = False) -> str: ...

    def inspect(self) -> DbInfo: ...

    def create_scratch(self, name: str) -> ServerHubDb: ...

    def drop(self) -> None: ...

    def list_scratch(self) -> list[str]: ...

    def scratch(self, name: str) -> ServerHubDb: ...


class ServerHubDbBase:
    """What both adapters share: the steps of ``capture``, ``check_dump``, ``is_empty`` and ``restore``
    (see the module docstring). Subclasses implement the database's side: ``_dump``, ``_load``,
    ``_tables``, ``_set_aside``, ``inspect``, ``create_scratch`` and ``drop``."""

    kind: str
    dump_format: str
    #: How ``--replace-hub-db`` keeps the current tables, for the refusal's hint.
    kept_as: str

    def __init__(self, url: DbUrl) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.redacted()!r})"

    # --- the port --------------------------------------------------------------------------------

    def capture(self, dest: Path) -> DbInfo:
        info = self.inspect()
        tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
        try:
            self._dump(tmp)
            tmp.replace(dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        log.info("dumped hub database %s (%d bytes, revision %s, %d users)", self.url.redacted(),
                 dest.stat().st_size, info.revision, len(info.users))
        return info

    def check_dump(self, path: Path) -> None:
        check_dump(path, self.dump_format)

    def is_empty(self) -> bool:
        return not self._tables()

    def scratch(self, name: str) -> ServerHubDb:
        """The adapter for the database ``name`` beside this one (nothing is created)."""
        return type(self)(self.url.with_database(name))  # type: ignore[return-value]

    def restore(self, dump: Path, *, replace: bool = False) -> str:
        tables = self._tables()
        kept = ""
        if tables:
            if not replace:
                raise UsageError(
                    f"the hub database {self.url.redacted()} is not empty ({len(tables)} tables); "
                    "nothing was restored",
                    hint="restore into an empty database, or pass --replace-hub-db to set the current "
                         f"tables aside (kept in {self.kept_as}) and restore")
            kept = self._set_aside(tables)
            log.warning("the %d current tables of %s were kept aside in %s before the restore", len(tables),
                        self.url.redacted(), kept)
        try:
            self._load(dump)
        except (JdrError, OSError) as e:
            if not kept:
                raise
            raise DeploymentError(
                f"{e} — the previous tables of the hub database are safe in {kept}; "
                f"{self.url.redacted()} holds what the failed restore loaded",
                hint=f"restore another run with --replace-hub-db, or move the tables back from {kept}") from e
        return kept

    # --- what each database does -----------------------------------------------------------------

    def inspect(self) -> DbInfo:
        raise NotImplementedError

    def list_scratch(self) -> list[str]:
        """The databases on the server whose name starts with :data:`SCRATCH_PREFIX` (sorted)."""
        raise NotImplementedError

    def _dump(self, dest: Path) -> None:
        """Write the dump to ``dest`` (a temporary name: ``capture`` renames it once complete)."""
        raise NotImplementedError

    def _load(self, dump: Path) -> None:
        """Load ``dump`` into the (empty) database with the database's own tool."""
        raise NotImplementedError

    def _tables(self) -> list[str]:
        """The database's tables (names, sorted)."""
        raise NotImplementedError

    def _set_aside(self, tables: list[str]) -> str:
        """Move ``tables`` out of the way, all or none; return where they are, for people."""
        raise NotImplementedError


class UnreachableDatabase(UsageError):
    """The hub database server cannot be reached (exit 2: the setting is wrong or the server is down)."""


class LoginRefused(UsageError):
    """The hub database server refused the configured credentials (exit 2)."""


def require_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed; jdr needs it for this hub database",
                          hint=f"install the Debian package {package} (jdr's image has it)")
    return found


def run_tool(argv: Sequence[str], *, env: Mapping[str, str], url: DbUrl, what: str,
             stdin: Any = None, stdout: Any = None, timeout: float = 3600,
             classify: Any = None) -> str:
    """Run a client tool with ``env`` added to the environment; return its stdout (when not redirected).

    A failure raises: ``classify(stderr)`` may return a more specific error; otherwise DeploymentError.
    The password never appears in argv (callers pass it through ``env`` or a 0600 file) and is cut out of
    any text that goes into an error.
    """
    full_env = {**os.environ, **env}
    log.debug("running %s for %s", argv[0], url.redacted())
    try:
        proc = subprocess.run(list(argv), env=full_env, stdin=stdin,
                              stdout=stdout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DeploymentError(f"could not {what} ({url.redacted()}): {e}") from e
    err = scrub(proc.stderr.decode("utf-8", "replace"), url)
    if proc.returncode != 0:
        if classify is not None:
            specific = classify(err)
            if specific is not None:
                raise specific
        raise DeploymentError(f"could not {what} ({url.redacted()}): {os.path.basename(argv[0])} exited "
                              f"with {proc.returncode}: {err.strip()[-800:]}")
    if err.strip():
        log.debug("%s: %s", os.path.basename(argv[0]), err.strip()[-800:])
    return proc.stdout.decode("utf-8", "replace") if stdout is None else ""


def scrub(text: str, url: DbUrl) -> str:
    """``text`` with the password (if any) cut out."""
    return text.replace(url.password, "***") if url.password else text


def unreachable(url: DbUrl, detail: str) -> UnreachableDatabase:
    return UnreachableDatabase(f"the hub database {url.redacted()} cannot be reached: {detail.strip()[-300:]}",
                               hint=f"check {SETTING} (host, port) and that the database server is running")


def login_refused(url: DbUrl, detail: str) -> LoginRefused:
    return LoginRefused(f"the hub database {url.redacted()} refused the login of {url.user!r}: "
                        f"{detail.strip()[-300:]}",
                        hint=f"check the user and password of {SETTING} (or deployment.hub_db_password_env)")


def info_from_json(text: str, *, size: int, kind: str, version: str, dump_format: str) -> DbInfo:
    """A DbInfo from the JSON document both adapters' describe query returns:
    ``{"users": [...], "servers": [{"user", "name", "state", "server_id", "started", "last_activity"}],
    "revision": str|null}``."""
    doc = json.loads(text)
    servers = []
    for s in doc.get("servers") or []:
        raw = s.get("state")  # text (JupyterHub's JSONDict is TEXT), or an object where the column is JSON
        state = raw if isinstance(raw, dict) else parse_state(raw)
        pvc = state.get("pvc_name")
        servers.append(ServerInfo(
            user=str(s["user"]), server=str(s.get("name") or ""), state=state,
            pvc_name=str(pvc) if isinstance(pvc, str) and pvc else None,
            started=parse_time(s.get("started")), last_activity=parse_time(s.get("last_activity")),
            running=s.get("server_id") is not None))
    servers.sort(key=lambda s: (s.user, s.server))
    return DbInfo(revision=doc.get("revision"), integrity="ok", size=size,
                  users=sorted(str(u) for u in doc.get("users") or []), servers=servers,
                  kind=kind, server_version=version, dump_format=dump_format)
