"""The PostgreSQL hub database adapter against a real PostgreSQL server (tests/fixtures/dbservers.py),
with the schema JupyterHub's own ORM creates there."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dr.errors import EXIT_USAGE, IntegrityError, UsageError
from dr.hubdb.postgres import PostgresHubDb
from dr.hubdb.schema import head_revision
from dr.hubdb.url import parse_db_url
from tests.fixtures.dbservers import HUB_PASSWORD, PostgresServer


@pytest.fixture
def pg_hub(postgres_server: PostgresServer) -> PostgresHubDb:
    return PostgresHubDb(parse_db_url(postgres_server.url(postgres_server.hub_database())))


def test_dump_and_restore_into_an_empty_database(pg_hub: PostgresHubDb, postgres_server: PostgresServer,
                                                 tmp_path: Path) -> None:
    dump = tmp_path / "hub.pgdump"
    info = pg_hub.capture(dump)
    assert info.users == sorted(["alice", "bob", "alice@example.com", "Émile", "carol"])
    assert info.revision == head_revision() and info.revision
    assert info.server_version and info.server_version.startswith("15")
    assert info.dump_format == "pg_dump-custom" and info.kind == "postgresql"
    alice = info.server("alice")
    assert alice is not None and alice.running and alice.pvc_name == "claim-alice"
    assert dump.read_bytes()[:5] == b"PGDMP"
    pg_hub.check_dump(dump)

    target = PostgresHubDb(parse_db_url(postgres_server.url(postgres_server.new_database())))
    assert target.is_empty()
    assert target.restore(dump) == ""
    restored = target.inspect()
    assert restored.users == info.users and restored.revision == info.revision
    assert restored.servers == info.servers


def test_restore_refuses_a_database_with_tables_and_writes_nothing(pg_hub: PostgresHubDb,
                                                                    postgres_server: PostgresServer,
                                                                    tmp_path: Path) -> None:
    dump = tmp_path / "hub.pgdump"
    pg_hub.capture(dump)
    pg_hub.url
    postgres_server.admin("DELETE FROM users WHERE name = 'bob'", pg_hub.url.database)
    with pytest.raises(UsageError, match="not empty") as e:
        pg_hub.restore(dump)
    assert e.value.exit_code == EXIT_USAGE
    assert "bob" not in pg_hub.inspect().users  # untouched

    kept = pg_hub.restore(dump, replace=True)
    assert "bob" in pg_hub.inspect().users
    schema = kept.split()[1]
    assert schema.startswith("jdr_previous_")
    # The replaced tables are kept aside, whole.
    assert postgres_server.admin(f'SELECT count(*) FROM "{schema}".users', pg_hub.url.database) == "4"


def test_a_truncated_dump_is_refused(pg_hub: PostgresHubDb, tmp_path: Path) -> None:
    dump = tmp_path / "hub.pgdump"
    pg_hub.capture(dump)
    dump.write_bytes(dump.read_bytes()[:200])
    with pytest.raises(IntegrityError):
        pg_hub.check_dump(dump)


def test_wrong_password_and_unreachable_server_exit_2_without_the_password(
        pg_hub: PostgresHubDb, postgres_server: PostgresServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = PostgresHubDb(pg_hub.url.with_password("not-" + HUB_PASSWORD))
    with pytest.raises(UsageError, match="refused the login") as e:
        wrong.capture(tmp_path / "x.pgdump")
    assert e.value.exit_code == EXIT_USAGE
    assert not (tmp_path / "x.pgdump").exists() and not list(tmp_path.iterdir())
    assert HUB_PASSWORD not in str(e.value) and HUB_PASSWORD not in caplog.text

    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    gone = PostgresHubDb(parse_db_url(postgres_server.url(pg_hub.url.database).replace(
        f":{postgres_server.port}/", f":{closed_port}/")))
    with pytest.raises(UsageError, match="cannot be reached") as e2:
        gone.inspect()
    assert "deployment.hub_db_url" in (e2.value.hint or "")
    assert HUB_PASSWORD not in str(e2.value) + repr(gone) + gone.url.redacted()
