"""The MySQL/MariaDB hub database adapter against a real MariaDB server (tests/fixtures/dbservers.py),
with the schema JupyterHub's own ORM creates there."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from dr.errors import EXIT_USAGE, IntegrityError, UsageError
from dr.hubdb import mysql as mysql_module
from dr.hubdb.mysql import MysqlHubDb
from dr.hubdb.schema import head_revision
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


def test_restore_refuses_a_database_with_tables(my_hub: MysqlHubDb, mariadb_server: MariadbServer,
                                                tmp_path: Path) -> None:
    dump = tmp_path / "hub.sql"
    my_hub.capture(dump)
    mariadb_server.admin("DELETE FROM users WHERE name = 'bob'", my_hub.url.database)
    with pytest.raises(UsageError, match="not empty") as e:
        my_hub.restore(dump)
    assert e.value.exit_code == EXIT_USAGE
    assert "bob" not in my_hub.inspect().users
    my_hub.restore(dump, replace=True)
    assert "bob" in my_hub.inspect().users


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
