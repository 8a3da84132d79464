"""A local hub whose database lives on PostgreSQL or MariaDB (``deployment.hub_db_url``), through the CLI
against real servers (tests/fixtures/dbservers.py): backup (encrypted), restore --hub into the hub's
database (refused while it holds tables unless --replace-hub-db) and into an empty one, and the refusals
of an unreachable server and a wrong password, which write nothing and never show the password."""

from __future__ import annotations

import json
import socket
from typing import Any

import nbformat
import pytest

from dr.hubdb.schema import head_revision
from dr.hubdb.server import scratch_name
from dr.model import new_run_id
from dr.operations.drill_sweep import lock_operation
from dr.util.timefmt import utcnow
from tests.fixtures.dbservers import HUB_PASSWORD, HUB_USER, MariadbServer, PostgresServer
from tests.fixtures.sandbox import Sandbox, describe

Server = PostgresServer | MariadbServer
DRIVERS = {"postgresql": "+psycopg2", "mysql": "+pymysql"}
DUMPS = {"postgresql": ("pg_dump-custom", "jupyterhub.pgdump.zst.age"),
         "mysql": ("mysqldump-sql", "jupyterhub.sql.zst.age")}


def orm_users(url: str) -> list[str]:
    """The users as a hub starting on this database sees them (JupyterHub's own ORM)."""
    from jupyterhub import orm

    factory = orm.new_session_factory(url)
    session = factory()
    try:
        return sorted(u.name for u in session.query(orm.User).all())
    finally:
        session.close()
        factory.kw["bind"].dispose()


def list_databases(kind: str, srv: Server) -> list[str]:
    sql = "SELECT datname FROM pg_database ORDER BY 1" if kind == "postgresql" else "SHOW DATABASES"
    return srv.admin(sql).split()


def configure(sb: Sandbox, server: Server, database: str, **extra: Any) -> None:
    sb.write_config(deployment={"hub_db": "", "hub_db_url": server.url(database, password=None),
                                "hub_db_password_env": "HUB_DB_PASSWORD"}, **extra)



def hub_sandbox(srv: Server, make_sandbox: Any, repo_url: str) -> tuple[Sandbox, str]:
    """A sandbox whose hub database is a new one on ``srv`` (returned), its password in the environment."""
    sb: Sandbox = make_sandbox(repo_url)
    sb.env["HUB_DB_PASSWORD"] = HUB_PASSWORD
    db = srv.hub_database()
    for nb in sb.root.glob("home/*/notebooks/*.ipynb"):  # the drill validates notebooks; these are stubs
        nbformat.write(nbformat.v4.new_notebook(), str(nb))
    return sb, db


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> tuple[str, Server]:
    name = "postgres_server" if request.param == "postgresql" else "mariadb_server"
    return request.param, request.getfixturevalue(name)


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_backup_and_restore_hub_on_a_database_server(server: tuple[str, Server], make_sandbox: Any,
                                                     repo_url: str) -> None:
    kind, srv = server
    sb, db = hub_sandbox(srv, make_sandbox, repo_url)
    key = sb.root / "k.key"
    sb.jdr_json("key", "generate", str(key))
    configure(sb, srv, db, encryption={"key_file": str(key)})

    proc = sb.run_jdr("--json", "backup")
    assert proc.returncode == 0, describe(proc)
    assert HUB_PASSWORD not in proc.stdout + proc.stderr
    hub = json.loads(proc.stdout)["manifest"]["hub"]
    fmt, name = DUMPS[kind]
    assert hub["status"] == "ok" and hub["db_kind"] == kind and hub["dump_format"] == fmt
    assert hub["db"]["key"].endswith("/hub/" + name)  # encrypted like the SQLite artifact
    assert hub["server_version"] and hub["alembic_revision"] == head_revision()
    users = sorted(["alice", "bob", "alice@example.com", "Émile", "carol"])
    assert sorted(hub["users"]) == users
    assert sb.jdr_json("verify", "--deep")["ok"] is True

    # A drill restores the dump into a new scratch database on the same server, checks it, drops it.
    configure(sb, srv, db, encryption={"key_file": str(key)}, drill={"scratch": str(sb.root / "scratch")})
    databases_before = list_databases(kind, srv)
    drill = sb.run_jdr("--json", "drill")
    assert drill.returncode == 0, describe(drill)
    report = json.loads(drill.stdout)
    assert report["ok"] and report["hub"]["status"] == "ok" and report["hub"]["users"] == len(users)
    assert report["hub"]["schema"]["verdict"] == "ok"
    assert list_databases(kind, srv) == databases_before  # the scratch database is gone
    assert HUB_PASSWORD not in drill.stdout + drill.stderr

    # The hub loses bob. A restore into its database (which holds tables) is refused, changing nothing.
    live = srv.url(db, driver=DRIVERS[kind])
    srv.admin("DELETE FROM spawners WHERE user_id = (SELECT id FROM users WHERE name = 'bob')", db)
    srv.admin("DELETE FROM users WHERE name = 'bob'", db)
    refused = sb.run_jdr("restore", "--hub", "--yes")
    assert refused.returncode == 2, describe(refused)
    assert "not empty" in refused.stderr and "--replace-hub-db" in refused.stderr
    assert srv.admin("SELECT count(*) FROM users WHERE name = 'bob'", db) == "0"  # nothing written

    done = sb.jdr_json("restore", "--hub", "--yes", "--replace-hub-db")
    assert done["status"] == "done"
    assert orm_users(live) == users  # the hub, started again, sees its users

    # Into a new, empty database: no flag needed.
    empty = srv.new_database()
    configure(sb, srv, empty, encryption={"key_file": str(key)})
    assert sb.jdr_json("restore", "--hub", "--yes")["status"] == "done"
    assert orm_users(srv.url(empty, driver=DRIVERS[kind])) == users


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_unreachable_server_and_wrong_password_exit_2_and_write_nothing(postgres_server: PostgresServer,
                                                                       make_sandbox: Any, repo_url: str) -> None:
    # PostgreSQL only through the CLI; MariaDB's errors are the adapter's (tests/e2e/test_hubdb_mysql.py).
    srv = postgres_server
    sb: Sandbox = make_sandbox(repo_url)
    db = srv.hub_database()
    sb.env["HUB_DB_PASSWORD"] = "wrong-" + HUB_PASSWORD
    configure(sb, srv, db)
    proc = sb.run_jdr("backup")
    assert proc.returncode == 2, describe(proc)
    assert "refused the login" in proc.stderr and HUB_PASSWORD not in proc.stdout + proc.stderr
    assert not sb.keys("runs/") and not sb.keys("data/")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    sb.env["HUB_DB_PASSWORD"] = HUB_PASSWORD
    sb.write_config(deployment={"hub_db": "", "hub_db_password_env": "HUB_DB_PASSWORD",
                                "hub_db_url": srv.url(db, password=None).replace(f":{srv.port}/", f":{closed}/")})
    proc = sb.run_jdr("backup")
    assert proc.returncode == 2, describe(proc)
    assert "cannot be reached" in proc.stderr and "deployment.hub_db_url" in proc.stderr
    assert HUB_PASSWORD not in proc.stdout + proc.stderr
    assert not sb.keys("runs/") and not sb.keys("data/")


@pytest.mark.parametrize("repo_url", ["file"], indirect=True)
def test_a_killed_drills_scratch_database_is_dropped_by_the_next_drill(server: tuple[str, Server],
                                                                      make_sandbox: Any, repo_url: str) -> None:
    """A drill killed between making its scratch database and dropping it leaves the database; the next
    drill drops it (by the dead drill's lock) and says so, and leaves alone a running drill's (live lock),
    a young one without a lock, and a name jdr does not make. An old one without a lock goes too."""
    kind, srv = server
    sb, db = hub_sandbox(srv, make_sandbox, repo_url)
    configure(sb, srv, db, drill={"scratch": str(sb.root / "scratch")})
    proc = sb.run_jdr("backup")
    assert proc.returncode == 0, describe(proc)

    def create(name: str) -> str:
        owner = f" OWNER {HUB_USER}" if kind == "postgresql" else ""
        srv.admin(f'CREATE DATABASE {quote(kind, name)}{owner}')
        return name

    running = new_run_id(utcnow())
    kept = {create("jdr_drill_notours"), create(scratch_name(new_run_id(utcnow()))),  # young, no lock
            create(scratch_name(running))}
    before = set(list_databases(kind, srv))

    sb.kill_at("drill-scratch-db", "drill")
    dead = sorted(set(list_databases(kind, srv)) - before)
    assert len(dead) == 1 and dead[0].startswith("jdr_drill_"), dead
    old = create(scratch_name("20200101T000000Z-0a0b0c"))  # after: the killed drill swept too

    with sb.repo().lock(lock_operation(running), exclusive=False):  # a drill that runs (this process)
        drill = sb.run_jdr("--json", "drill")
    assert drill.returncode == 0, describe(drill)
    report = json.loads(drill.stdout)
    removed = report["leftovers_removed"]
    for name in (*dead, old):
        assert any(f"/{name}" in where and where.startswith("database ") for where in removed), report
    after = set(list_databases(kind, srv))
    assert kept <= after and not {old, *dead} & after
    assert after == before  # the new drill dropped its own too
    assert HUB_PASSWORD not in drill.stdout + drill.stderr
    for name in kept:
        srv.admin(f"DROP DATABASE {quote(kind, name)}")


def quote(kind: str, name: str) -> str:
    return f'"{name}"' if kind == "postgresql" else f"`{name}`"
