"""The MySQL/MariaDB hub database adapter against a real MariaDB server (tests/fixtures/dbservers.py),
with the schema JupyterHub's own ORM creates there."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from dr.errors import EXIT_USAGE, IntegrityError, JdrError, UsageError
from dr.hubdb import mysql as mysql_module
from dr.hubdb.mysql import MysqlHubDb
from dr.hubdb.schema import check_revision, head_revision, known_revisions
from dr.hubdb.url import parse_db_url
from tests.fixtures.dbservers import HUB_PASSWORD, MariadbServer


@pytest.fixture
def my_hub(mariadb_server: MariadbServer) -> MysqlHubDb:
    return MysqlHubDb(parse_db_url(mariadb_server.url(mariadb_server.hub_database())))


def test_dump_and_restore_into_an_empty_database(my_hub: MysqlHubDb, mariadb_server: MariadbServer,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The credentials file the tools read: mode 0600, and the password on no command line.
    seen: list[tuple[list[str], int, str]] = []
    real = mysql_module.run_tool

    def spy(argv, **kw):  # type: ignore[no-untyped-def]
        cnf = next(a.split("=", 1)[1] for a in argv if a.startswith("--defaults-extra-file="))
        seen.append((list(argv), stat.S_IMODE(os.stat(cnf).st_mode), Path(cnf).read_text()))
        return real(argv, **kw)

    monkeypatch.setattr(mysql_module, "run_tool", spy)
    dump = tmp_path / "hub.sql"
    info = my_hub.capture(dump)
    assert info.users == sorted(["alice", "bob", "alice@example.com", "Émile", "carol"])
    assert info.revision == head_revision() and info.revision
    assert info.server_version and "MariaDB" in info.server_version
    alice = info.server("alice")
    assert alice is not None and alice.running and alice.pvc_name == "claim-alice"
    my_hub.check_dump(dump)
    assert seen and all(mode == 0o600 and HUB_PASSWORD in text and HUB_PASSWORD not in " ".join(argv)
                        for argv, mode, text in seen)

    target = MysqlHubDb(parse_db_url(mariadb_server.url(mariadb_server.new_database())))
    assert target.is_empty()
    target.restore(dump)
    restored = target.inspect()
    assert restored.users == info.users and restored.revision == info.revision
    assert restored.servers == info.servers


def test_restore_refuses_a_database_with_tables_and_replace_keeps_them_aside(
        my_hub: MysqlHubDb, mariadb_server: MariadbServer, tmp_path: Path) -> None:
    dump = tmp_path / "hub.sql"
    my_hub.capture(dump)
    db = my_hub.url.database
    mariadb_server.admin("DELETE FROM users WHERE name = 'bob'", db)
    with pytest.raises(UsageError, match="not empty") as e:
        my_hub.restore(dump)
    assert e.value.exit_code == EXIT_USAGE and "_jdr_replaced_" in (e.value.hint or "")
    assert "bob" not in my_hub.inspect().users

    kept = my_hub.restore(dump, replace=True)
    restored = my_hub.inspect()
    assert "bob" in restored.users and restored.revision == head_revision()
    assert check_revision(restored.revision, known_revisions()).ok
    # The replaced tables are kept aside, whole, in the database the result names.
    aside = kept.split()[1]
    assert aside.startswith(f"{db}_jdr_replaced_"), kept
    assert sorted(mariadb_server.admin(f"SELECT name FROM `{aside}`.users").split("\n")) == \
        sorted(u for u in restored.users if u != "bob")


def test_a_restore_that_fails_midway_leaves_the_old_tables_kept_aside(
        my_hub: MysqlHubDb, mariadb_server: MariadbServer, tmp_path: Path) -> None:
    """A dump the tool fails on after loading some tables (a statement broken in its middle: the dump's
    completion line is intact, so only the load finds it): the error says where the old tables are."""
    dump = tmp_path / "hub.sql"
    my_hub.capture(dump)
    text = dump.read_text()
    cut = text.index("CREATE TABLE `users`")
    dump.write_text(text[:cut] + "THIS IS NOT SQL;\n" + text[cut:])
    my_hub.check_dump(dump)  # passes: the damage is not at the end
    before = sorted(my_hub.inspect().users)
    with pytest.raises(JdrError) as e:
        my_hub.restore(dump, replace=True)
    message = str(e.value)
    assert "could not restore the hub database" in message and "are safe in database" in message
    aside = message.split("are safe in database ")[1].split()[0]
    assert aside.startswith(f"{my_hub.url.database}_jdr_replaced_")
    assert sorted(mariadb_server.admin(f"SELECT name FROM `{aside}`.users").split("\n")) == before
    assert HUB_PASSWORD not in message


def test_replace_without_the_privilege_leaves_the_tables_in_place(mariadb_server: MariadbServer,
                                                                 tmp_path: Path) -> None:
    """A hub user that may not create the set-aside database: refused before anything moved, and told
    which privilege it lacks."""
    hub = MysqlHubDb(parse_db_url(mariadb_server.url(mariadb_server.hub_database())))
    dump = tmp_path / "hub.sql"
    hub.capture(dump)
    # Grants are by database-name pattern; revoke the set-aside one for the duration of this test.
    grant = "ALL PRIVILEGES ON `%\\_jdr\\_replaced\\_%`.* {} 'jdrtpg_hub'@'127.0.0.1'"
    mariadb_server.admin("REVOKE " + grant.format("FROM"))
    try:
        with pytest.raises(JdrError, match="are in place and nothing was restored") as e:
            hub.restore(dump, replace=True)
        assert "GRANT ALL PRIVILEGES ON `jupyterhub\\_jdr\\_replaced\\_%`" in (e.value.hint or "")
        assert sorted(hub.inspect().users) == sorted(["alice", "bob", "alice@example.com", "Émile", "carol"])
    finally:
        mariadb_server.admin("GRANT " + grant.format("TO"))


def test_truncated_dump_wrong_password_unreachable(my_hub: MysqlHubDb, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dump = tmp_path / "hub.sql"
    my_hub.capture(dump)
    dump.write_bytes(dump.read_bytes()[:-300])
    with pytest.raises(IntegrityError):
        my_hub.check_dump(dump)

    wrong = MysqlHubDb(my_hub.url.with_password("not-" + HUB_PASSWORD))
    with pytest.raises(UsageError, match="refused the login") as e:
        wrong.capture(tmp_path / "x.sql")
    assert e.value.exit_code == EXIT_USAGE and not (tmp_path / "x.sql").exists()
    import dataclasses
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    gone = MysqlHubDb(dataclasses.replace(my_hub.url, port=closed))
    with pytest.raises(UsageError, match="cannot be reached"):
        gone.inspect()
    assert HUB_PASSWORD not in str(e.value) + caplog.text
