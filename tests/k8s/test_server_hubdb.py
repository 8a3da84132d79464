"""A z2jh hub on a database server on the test control plane (``hub.db.type: postgres`` or ``mysql``,
``hub.db.url`` in the hub Secret's values.yaml, the password in its key ``hub.db.password``, which the real
JupyterHub's config sets as ``PGPASSWORD``/``MYSQL_PWD``, as the chart's does): no hub-db-dir PVC, the hub's
database on a real PostgreSQL 15 or MariaDB server (tests/fixtures/dbservers.py, on 127.0.0.1, which the node
agent's pods share).

PostgreSQL: backup (the dump made by a mover pod with pg_dump; server version and alembic revision in the
manifest), an incremental backup, restore one user, restore the hub (a dropped table comes back, users
checked; ``--replace-hub-db`` keeps the replaced tables aside), restore everything, a drill (a scratch
database on the same server, dropped after); and the password nowhere: not in the mover pods' specs (only
a ``secretKeyRef``), jdr's output and logs, or the repository's manifests. MariaDB, kept cheaper: backup,
the hub restore refused then replacing, a drill, the password nowhere (the same checks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.fixtures.dbservers import HUB_PASSWORD, HUB_USER, MariadbServer, PostgresServer
from tests.k8s.conftest import jdr_objects
from tests.k8s.test_drill_k8s import drill, drill_ns  # noqa: F401 (a fixture)
from tests.k8s.test_mover_security import MoverSpy

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

USERS = ({"name": "alice"}, {"name": "bob"})


def tables(pg: PostgresServer, db: str) -> set[str]:
    return set(pg.admin("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
                        db).split())


def json_runner(jdr, outputs: list[str]) -> Callable[..., dict]:
    """``run(*args)``: ``jdr --json *args`` (must succeed), its output kept in ``outputs`` for the password
    check, its JSON returned."""
    def run(*args: str) -> dict:
        res = jdr.run("--json", *args)
        outputs.append(res.stdout + res.stderr)
        return json.loads(res.stdout)
    return run


def assert_password_nowhere(k8s_cluster, spy: MoverSpy, ns, jdr, outputs: list[str], *, movers: int) -> None:
    """The hub DB's password reached the hub-capture/hub-restore movers (at least ``movers`` of them) only as
    a ``secretKeyRef`` to the hub Secret's ``hub.db.password``; it is in no pod spec, none of jdr's
    ``outputs``, no manifest; and jdr left no pods, PVCs or snapshots in the namespace."""
    spy.stop()
    dumps = spy.by_purpose("hub-capture") + spy.by_purpose("hub-restore")
    assert len(dumps) >= movers, [p.metadata.name for p in spy.pods]
    for pod in dumps:
        env = {e.name: e for e in pod.spec.containers[0].env or []}
        ref = env["JDR_HUB_DB_PASSWORD"].value_from.secret_key_ref
        assert (ref.name, ref.key) == (ns.hub_secret, "hub.db.password") and env["JDR_HUB_DB_PASSWORD"].value is None
        assert HUB_PASSWORD not in json.dumps(k8s_cluster.api.sanitize_for_serialization(pod))
    for text in outputs:
        assert HUB_PASSWORD not in text
    repo = jdr.repo()
    for run_id in repo.run_ids():
        assert HUB_PASSWORD not in json.dumps(repo.load_manifest(run_id).to_dict())
    assert jdr_objects(k8s_cluster, ns.namespace) == {"pods": [], "pvcs": [], "snapshots": []}


def test_postgres_hub_backup_incremental_restore_and_drill(k8s_cluster, z2jh_namespace, jdr_k8s, drill_ns,  # noqa: F811
                                                           postgres_server: PostgresServer):
    t0 = time.monotonic()
    pg = postgres_server
    db = pg.new_database()
    ns = z2jh_namespace(users=USERS, running=("alice",),
                        hub_db={"type": "postgres", "url": f"postgresql+psycopg2://{HUB_USER}@127.0.0.1:{pg.port}/{db}",
                                "password": HUB_PASSWORD})
    assert {"api_tokens", "users", "spawners"} <= tables(pg, db)
    assert not k8s_cluster.core.list_namespaced_persistent_volume_claim(
        ns.namespace, field_selector=f"metadata.name={ns.hub_db_pvc}").items  # no hub-db-dir: the DB is on PG
    ns.write_file(ns.users["alice"].pvc_name, "work/a.txt", "alice's work\n")
    spy = MoverSpy(k8s_cluster, ns.namespace)
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"drill_namespace": drill_ns})
    outputs: list[str] = []
    run = json_runner(jdr, outputs)

    t1 = time.monotonic()
    first = run("backup")
    t2 = time.monotonic()
    assert first["status"] == "complete", first
    hub = first["manifest"]["hub"]
    assert hub["db_kind"] == "postgresql" and hub["dump_format"] == "pg_dump-custom"
    assert hub["server_version"].startswith("15") and hub["alembic_revision"]
    assert sorted(hub["users"]) == ["alice", "bob"]
    assert hub["db"]["key"].endswith("/hub/jupyterhub.pgdump.zst")
    recorded = first["manifest"]["deployment"]["hub"]["db"]
    assert recorded["kind"] == "postgresql" and recorded["password_secret"] == ns.hub_secret
    assert recorded["origin"] == "the hub Secret's values.yaml"
    assert {i["user"] for i in first["manifest"]["volumes"]} == {"alice", "bob"}  # mapped through the dump's state

    second = run("backup")
    t3 = time.monotonic()
    assert second["status"] == "complete", second
    bob = next(i for i in second["manifest"]["volumes"] if i["user"] == "bob")
    assert bob["reused_from"] == first["run"]  # inactive: referenced without a mover

    # restore one user
    ns.write_file(ns.users["alice"].pvc_name, "work/a.txt", "damaged")
    assert run("restore", "--user", "alice", "--yes")["status"] == "done"
    assert ns.read_file(ns.users["alice"].pvc_name, "work/a.txt") == b"alice's work\n"
    t4 = time.monotonic()

    # restore the hub: a database with tables is refused without --replace-hub-db before the hub is stopped
    alice_token = ns.users["alice"].token
    assert ns.api("GET", "/user", token=alice_token)[0] == 200
    hub_pod = ns.hub_pod().metadata.uid
    pg.admin("DROP TABLE api_tokens CASCADE", db)
    refused = jdr.run("--json", "restore", "--hub", "--yes", check=False)
    outputs.append(refused.stdout + refused.stderr)
    assert refused.code == 2, refused.stderr[-3000:]
    assert "--replace-hub-db" in refused.stdout + refused.stderr
    assert not pg.admin("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'jdr_previous_%'", db)
    assert ns.hub_pod().metadata.uid == hub_pod  # never stopped
    assert "api_tokens" not in tables(pg, db)
    res = run("restore", "--hub", "--replace-hub-db", "--yes")
    assert res["status"] == "done", res
    kept = pg.admin("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'jdr_previous_%'", db).split()
    assert len(kept) == 1  # the replaced tables, set aside
    ns.wait_hub_ready()
    assert ns.api("GET", "/user", token=alice_token)[0] == 200  # the dropped table came back, with its rows
    status, body = ns.api("GET", "/users")
    assert status == 200 and sorted(u["name"] for u in body) == ["alice", "bob"]
    t5 = time.monotonic()

    # restore everything (the hub again, replacing; every home)
    ns.write_file(ns.users["bob"].pvc_name, "README.md", "damaged")
    res = run("restore", "--all", "--replace-hub-db", "--yes")
    assert res["status"] == "done", res
    assert b"home of bob" in ns.read_file(ns.users["bob"].pvc_name, "README.md")
    ns.wait_hub_ready()
    t6 = time.monotonic()

    # a drill: a scratch database on the same server, gone after; and the one an earlier drill left when it
    # was killed (no lock, started long ago) is swept first, as on a local hub (dr/operations/drill_sweep.py)
    pg.admin(f"CREATE DATABASE jdr_drill_20260101t000000z_0a0b0c OWNER {HUB_USER}")
    rc, doc, err = drill(jdr)
    outputs.append(json.dumps(doc) + err)
    assert rc == 0 and doc["ok"], (doc.get("failures"), err[-4000:])
    assert any("jdr_drill_20260101t000000z_0a0b0c" in w for w in doc["leftovers_removed"]), doc["leftovers_removed"]
    assert sorted(doc["users"]["db"]) == ["alice", "bob"]
    assert pg.admin("SELECT count(*) FROM pg_database WHERE datname LIKE 'jdr_drill_%'") == "0"
    t7 = time.monotonic()

    # the password: only ever a secretKeyRef in the movers' pod specs, never in output, logs or manifests
    assert_password_nowhere(k8s_cluster, spy, ns, jdr, outputs, movers=4)
    print(f"\nnamespace {t1 - t0:.1f}s, backup {t2 - t1:.1f}s, incremental {t3 - t2:.1f}s, restore alice "
          f"{t4 - t3:.1f}s, restore hub {t5 - t4:.1f}s, restore all {t6 - t5:.1f}s, drill {t7 - t6:.1f}s")


def mysql_tables(my: MariadbServer, db: str) -> set[str]:
    return set(my.admin(f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}'").split())


def test_mariadb_hub_backup_restore_and_drill(k8s_cluster, z2jh_namespace, jdr_k8s, drill_ns,  # noqa: F811
                                              mariadb_server: MariadbServer):
    """The same hub on MariaDB (``hub.db.type: mysql``, PyMySQL, the password as ``MYSQL_PWD`` handed on
    in ``db_kwargs`` as jdr's hint for a password in the URL says), kept cheap: backup (a mover runs
    mariadb-dump), ``restore --hub`` refused on tables then replacing them (the old ones kept in
    ``<db>_jdr_replaced_<time>``), a drill (a killed drill's scratch database swept, its own dropped), the
    password nowhere."""
    t0 = time.monotonic()
    my = mariadb_server
    db = my.new_database()
    ns = z2jh_namespace(users=USERS, hub_db={"type": "mysql", "password": HUB_PASSWORD,
                                             "url": f"mysql+pymysql://{HUB_USER}@127.0.0.1:{my.port}/{db}"})
    assert {"api_tokens", "users", "spawners", "alembic_version"} <= mysql_tables(my, db)
    spy = MoverSpy(k8s_cluster, ns.namespace)
    jdr = jdr_k8s(ns.namespace, hub=ns, kubernetes={"drill_namespace": drill_ns})
    outputs: list[str] = []
    run = json_runner(jdr, outputs)

    t1 = time.monotonic()
    first = run("backup")
    t2 = time.monotonic()
    assert first["status"] == "complete", first
    hub = first["manifest"]["hub"]
    assert hub["db_kind"] == "mysql" and hub["dump_format"] == "mysqldump-sql"
    assert "mariadb" in hub["server_version"].lower()
    assert hub["alembic_revision"] == my.admin("SELECT version_num FROM alembic_version", db)
    assert sorted(hub["users"]) == ["alice", "bob"]
    recorded = first["manifest"]["deployment"]["hub"]["db"]
    assert recorded["kind"] == "mysql" and recorded["password_secret"] == ns.hub_secret
    assert len(spy.by_purpose("hub-capture")) == 1  # the dump ran in a mover pod

    # restore the hub: refused on a database with tables, the hub left running; then replacing them
    alice_token = ns.users["alice"].token
    assert ns.api("GET", "/user", token=alice_token)[0] == 200
    hub_pod = ns.hub_pod().metadata.uid
    my.admin("DROP TABLE api_tokens", db)
    refused = jdr.run("--json", "restore", "--hub", "--yes", check=False)
    outputs.append(refused.stdout + refused.stderr)
    assert refused.code == 2, refused.stderr[-3000:]
    assert "--replace-hub-db" in refused.stdout + refused.stderr
    assert ns.hub_pod().metadata.uid == hub_pod  # never stopped
    # only this hub's database: the server is shared with the local MySQL tests, whose replaces keep theirs
    assert not my.admin(f"SHOW DATABASES LIKE '{db}\\_jdr\\_replaced\\_%'")
    res = run("restore", "--hub", "--replace-hub-db", "--yes")
    assert res["status"] == "done", res
    kept = my.admin(f"SHOW DATABASES LIKE '{db}\\_jdr\\_replaced\\_%'").split()
    assert len(kept) == 1 and {"users", "spawners"} <= mysql_tables(my, kept[0])  # the replaced tables
    assert "api_tokens" not in mysql_tables(my, kept[0])
    ns.wait_hub_ready()
    assert ns.api("GET", "/user", token=alice_token)[0] == 200  # the dropped table came back, with its rows
    status, body = ns.api("GET", "/users")
    assert status == 200 and sorted(u["name"] for u in body) == ["alice", "bob"]
    t3 = time.monotonic()

    # a drill: a scratch database jdr_drill_<drill> on the same server, dropped after; the one a killed
    # drill left (no lock, started long ago) is swept first
    my.admin("CREATE DATABASE jdr_drill_20260101t000000z_0a0b0c")
    rc, doc, err = drill(jdr)
    outputs.append(json.dumps(doc) + err)
    assert rc == 0 and doc["ok"], (doc.get("failures"), err[-4000:])
    assert any("jdr_drill_20260101t000000z_0a0b0c" in w for w in doc["leftovers_removed"]), doc["leftovers_removed"]
    assert sorted(doc["users"]["db"]) == ["alice", "bob"]
    assert not my.admin("SHOW DATABASES LIKE 'jdr\\_drill\\_%'")
    t4 = time.monotonic()

    assert_password_nowhere(k8s_cluster, spy, ns, jdr, outputs, movers=3)
    print(f"\nnamespace {t1 - t0:.1f}s, backup {t2 - t1:.1f}s, restore hub {t3 - t2:.1f}s, drill {t4 - t3:.1f}s")
