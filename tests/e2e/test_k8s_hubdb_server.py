"""A z2jh hub on PostgreSQL, below the control plane: where jdr finds the database (the hub Secret's
``values.yaml`` and key ``hub.db.password``), the mover pods it makes (the password only as a
``secretKeyRef``), and the mover tasks themselves (``jdr agent capture-server-hub-db`` /
``restore-server-hub-db``) against a real PostgreSQL server (tests/fixtures/dbservers.py) and a real
repository. The whole scenario on the control plane is tests/k8s/test_server_hubdb.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from dr.deployments.kubernetes.hubdb_agent import (
    capture_server_hub_db,
    check_server_hub_db,
    info_from_doc,
    restore_server_hub_db,
)
from dr.deployments.kubernetes.hubdb_server import (
    PASSWORD_ENV,
    PASSWORD_KEY,
    capture_spec,
    decide_server_db,
    restore_spec,
    scratch_name,
)
from dr.deployments.kubernetes.objects import MoverConfig, Security, make_mover_pod
from dr.errors import EXIT_USAGE, UsageError
from dr.hubdb.postgres import PostgresHubDb
from dr.hubdb.url import parse_db_url
from dr.model import Artifact
from dr.repository import layout
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from tests.fixtures.dbservers import HUB_PASSWORD, MariadbServer, PostgresServer


def _secret(values: dict, password: str | None = HUB_PASSWORD) -> dict:
    data = {"values.yaml": base64.b64encode(yaml.safe_dump(values).encode()).decode()}
    if password is not None:
        data[PASSWORD_KEY] = base64.b64encode(password.encode()).decode()
    return {"metadata": {"name": "hub"}, "data": data}


def _pg_values(url: str) -> dict:
    return {"hub": {"db": {"type": "postgres", "url": url}}}


def test_discovery_reads_hub_db_from_the_hub_secret() -> None:
    values = _pg_values("postgresql+psycopg2://hubuser@db.example:5433/hubdb")
    db = decide_server_db(values, _secret(values), "hub")
    assert db is not None
    assert (db.url.kind, db.url.host, db.url.port, db.url.user, db.url.database) == \
        ("postgresql", "db.example", 5433, "hubuser", "hubdb")
    assert db.url.password == "" and db.secret == "hub" and db.dump_format == "pg_dump-custom"
    # sqlite-pvc (the chart's default) is the PVC hub: no server database
    assert decide_server_db({"hub": {"db": {"type": "sqlite-pvc"}}}, _secret({}), "hub") is None
    assert decide_server_db(None, None, "hub") is None
    # jdr's setting wins over hub.db.url; the password still comes from the Secret
    db = decide_server_db(values, _secret(values), "hub", "mysql://other@10.0.0.9/hub")
    assert db is not None and db.url.kind == "mysql" and db.url.host == "10.0.0.9" and db.secret == "hub"
    # what a mover's command line gets parses back to the same place (sockets too), never with a password
    for url in ("postgresql://u@h:5/db", "postgresql://u@/db?host=/run/pg", "mysql://u@/db?unix_socket=/run/my.sock"):
        found = decide_server_db({}, _secret({}), "hub", url)
        assert found is not None and parse_db_url(found.url_text()) == found.url
    # no password key: the database is reached without one (trust/peer auth)
    db = decide_server_db(values, _secret(values, None), "hub")
    assert db is not None and db.secret == ""


@pytest.mark.parametrize(("values", "setting", "named"), [
    ({"hub": {"db": {"type": "sqlite-memory"}}}, "", "hub.db.type"),
    ({"hub": {"db": {"type": "oracle", "url": "oracle://x/y"}}}, "", "hub.db.type"),
    ({"hub": {"db": {"type": "postgres"}}}, "", "hub.db.url"),
    (_pg_values("postgresql://u:pw@h/db"), "", "hub.db.url"),
    ({}, "postgresql://u:pw@h/db", "deployment.hub_db_url"),
])
def test_discovery_refuses_what_it_cannot_back_up(values: dict, setting: str, named: str) -> None:
    with pytest.raises(UsageError) as e:
        decide_server_db(values, _secret(values), "hub", setting)
    assert e.value.exit_code == EXIT_USAGE and named in e.value.message
    assert "pw@" not in e.value.message


def test_a_mysql_url_with_a_password_is_refused_with_what_a_pymysql_hub_needs() -> None:
    """Moving the password from hub.db.url to hub.db.password is not enough for z2jh's hub image, whose
    PyMySQL ignores MYSQL_PWD: the hint says what else the hub needs (the control-plane MariaDB hub in
    tests/k8s/test_server_hubdb.py runs with exactly that); a PostgreSQL hub (libpq reads PGPASSWORD) does not."""
    values = {"hub": {"db": {"type": "mysql", "url": "mysql+pymysql://u:pw@h/db"}}}
    with pytest.raises(UsageError) as e:
        decide_server_db(values, _secret(values), "hub")
    assert e.value.exit_code == EXIT_USAGE and "hub.db.password" in e.value.hint
    assert "PyMySQL" in e.value.hint and "c.JupyterHub.db_kwargs" in e.value.hint and "pw" not in e.value.message
    with pytest.raises(UsageError) as e:
        decide_server_db(_pg_values("postgresql://u:pw@h/db"), _secret({}), "hub")
    assert "PyMySQL" not in e.value.hint


def test_the_password_reaches_the_mover_only_as_a_secret_key_ref() -> None:
    values = _pg_values("postgresql://hubuser@db.example/hubdb")
    db = decide_server_db(values, _secret(values), "hub-secret")
    assert db is not None
    cfg = MoverConfig(image="jdr:test", command=("jdr",), env=(("JDR_REPOSITORY_URL", "s3://b/r"),))
    art = Artifact(key="data/r/hub/jupyterhub.pgdump.zst", size=1, sha256="0" * 64)
    for spec in (capture_spec(db, "2026-01-01T000000Z", 3, Security("as-user", uid=1000, gid=1000)),
                 restore_spec(db, "op", art, Security("as-user", uid=1000, gid=1000), replace=True),
                 restore_spec(db, "op", art, Security("as-user", uid=1000, gid=1000), scratch=scratch_name("d-1"))):
        pod = make_mover_pod(spec, cfg)
        container = pod["spec"]["containers"][0]
        refs = [e for e in container["env"] if e["name"] == PASSWORD_ENV]
        assert refs == [{"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": "hub-secret",
                                                                               "key": PASSWORD_KEY}}}]
        assert all("value" not in e for e in refs)
        assert "postgresql://hubuser@db.example:5432/hubdb" in container["command"]
        assert container["securityContext"]["runAsUser"] == 1000 and not pod["spec"]["volumes"][1:]
        assert HUB_PASSWORD not in json.dumps(pod)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.open(FileStore.from_url(f"file://{tmp_path / 'repo'}"), create=True)


def test_mover_tasks_dump_and_restore_a_real_postgresql_hub(postgres_server: PostgresServer, repo: Repository,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    source = postgres_server.hub_database()
    no_password = postgres_server.url(source, password=None)
    monkeypatch.setenv(PASSWORD_ENV, HUB_PASSWORD)
    run = "2026-12-02T060000Z"
    result = capture_server_hub_db(repo, run=run, url_text=no_password, level=3)
    assert HUB_PASSWORD not in json.dumps(result)
    info = info_from_doc(json.loads(json.dumps(result))["info"])  # as it travels in a termination message
    assert info.kind == "postgresql" and info.dump_format == "pg_dump-custom"
    assert info.server_version and info.server_version.startswith("15") and info.revision
    assert "alice" in info.users and info.server("alice") is not None
    assert info.server("alice").pvc_name == "claim-alice"  # type: ignore[union-attr]
    artifact = Artifact.from_dict(result["artifact"])
    assert artifact.key == layout.hub_db_key(run, False, "pg_dump-custom")

    # into an empty database: the users come back
    empty = postgres_server.new_database()
    assert check_server_hub_db(url_text=postgres_server.url(empty, password=None)) == {"status": "ok", "empty": True}
    assert not check_server_hub_db(url_text=no_password)["empty"]
    done = restore_server_hub_db(repo, artifact=artifact, url_text=postgres_server.url(empty, password=None))
    assert info_from_doc(done["info"]).users == info.users and done["previous"] == ""
    # into one with tables: refused, nothing written; with replace the tables are set aside
    postgres_server.admin("DELETE FROM users WHERE name = 'bob'", empty)
    with pytest.raises(UsageError, match="not empty"):
        restore_server_hub_db(repo, artifact=artifact, url_text=postgres_server.url(empty, password=None))
    assert "bob" not in PostgresHubDb(parse_db_url(postgres_server.url(empty))).inspect().users
    done = restore_server_hub_db(repo, artifact=artifact, url_text=postgres_server.url(empty, password=None),
                                 replace=True)
    assert "bob" in info_from_doc(done["info"]).users and "jdr_previous_" in done["previous"]
    # a drill: a scratch database, recognisably named, dropped after
    scratch = scratch_name("20261202T061500Z-a1b2c3")
    done = restore_server_hub_db(repo, artifact=artifact, url_text=no_password, scratch=scratch)
    assert done["dropped"] and info_from_doc(done["info"]).users == info.users
    assert postgres_server.admin(f"SELECT count(*) FROM pg_database WHERE datname = '{scratch}'") == "0"
    # without the password: the server's refusal is a usage error (exit 2), the password never shown
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(UsageError) as e:
        capture_server_hub_db(repo, run="2026-12-02T062000Z", url_text=no_password, level=3)
    assert e.value.exit_code == EXIT_USAGE
    assert HUB_PASSWORD not in capsys.readouterr().out + capsys.readouterr().err


def test_mover_tasks_dump_and_restore_a_real_mariadb_hub(mariadb_server: MariadbServer, repo: Repository,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    source = mariadb_server.hub_database()
    monkeypatch.setenv(PASSWORD_ENV, HUB_PASSWORD)
    run = "2026-12-02T063000Z"
    result = capture_server_hub_db(repo, run=run, url_text=mariadb_server.url(source, password=None), level=3)
    assert HUB_PASSWORD not in json.dumps(result)
    info = info_from_doc(json.loads(json.dumps(result))["info"])
    assert info.kind == "mysql" and info.dump_format == "mysqldump-sql" and info.server_version and info.revision
    artifact = Artifact.from_dict(result["artifact"])
    assert artifact.key == layout.hub_db_key(run, False, "mysqldump-sql")
    empty = mariadb_server.new_database()
    done = restore_server_hub_db(repo, artifact=artifact, url_text=mariadb_server.url(empty, password=None))
    restored = info_from_doc(done["info"])
    assert restored.users == info.users and restored.revision == info.revision
    assert restored.server("alice") is not None and restored.server("alice").pvc_name == "claim-alice"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="not empty"):
        restore_server_hub_db(repo, artifact=artifact, url_text=mariadb_server.url(empty, password=None))
    scratch = scratch_name("20261202T063500Z-a1b2c3")
    done = restore_server_hub_db(repo, artifact=artifact, url_text=mariadb_server.url(source, password=None),
                                 scratch=scratch)
    assert done["dropped"] and info_from_doc(done["info"]).users == info.users
    assert scratch not in mariadb_server.admin("SHOW DATABASES").split()
