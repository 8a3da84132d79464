"""Hub database URLs: parsing, redaction (never a password in text), and z2jh's hub.db values."""

from __future__ import annotations

import pytest

from dr.errors import EXIT_USAGE, ConfigError
from dr.hubdb.url import from_z2jh_values, parse_db_url


@pytest.mark.parametrize(("url", "kind", "host", "port", "user", "database"), [
    ("postgresql://hub:pw@db.example:6543/jupyterhub", "postgresql", "db.example", 6543, "hub", "jupyterhub"),
    ("postgres://hub@db/jh", "postgresql", "db", 5432, "hub", "jh"),
    ("postgresql+psycopg2://hub:p%40ss@10.0.0.1/jh", "postgresql", "10.0.0.1", 5432, "hub", "jh"),
    ("mysql+pymysql://hub:pw@mysql:3307/jh?charset=utf8mb4", "mysql", "mysql", 3307, "hub", "jh"),
    ("mariadb://hub@m/jh", "mysql", "m", 3306, "hub", "jh"),
])
def test_server_urls(url: str, kind: str, host: str, port: int, user: str, database: str) -> None:
    u = parse_db_url(url)
    assert (u.kind, u.host, u.port, u.user, u.database) == (kind, host, port, user, database)


def test_password_is_decoded_and_never_shown() -> None:
    u = parse_db_url("postgresql://hub:p%40ss-S3cret@db/jh")
    assert u.password == "p@ss-S3cret"
    for text in (u.redacted(), repr(u), str(u)):
        assert "S3cret" not in text
    assert u.redacted() == "postgresql://hub:***@db:5432/jh"
    with pytest.raises(ConfigError) as e:
        parse_db_url("oracle://hub:S3cret@db/jh")
    assert "S3cret" not in str(e.value) and e.value.exit_code == EXIT_USAGE


def test_sqlite_and_bad_urls() -> None:
    assert parse_db_url("sqlite:////srv/jupyterhub/jupyterhub.sqlite").path == "/srv/jupyterhub/jupyterhub.sqlite"
    for bad in ("postgresql://hub@db/", "mysql:///jh", "sqlite://", "postgresql://hub@db:notaport/jh"):
        with pytest.raises(ConfigError, match=r"deployment\.hub_db_url"):
            parse_db_url(bad)
    u = parse_db_url("postgresql://hub@/jh?host=/run/postgresql")
    assert u.socket == "/run/postgresql" and u.database == "jh"


def test_z2jh_values() -> None:
    assert from_z2jh_values({}) is None
    assert from_z2jh_values({"hub": {"db": {"type": "sqlite-pvc"}}}) is None
    u = from_z2jh_values({"hub": {"db": {"type": "postgres", "url": "postgresql+psycopg2://jupyterhub@pg:5432/jh"}}},
                         password="from-secret")
    assert u is not None and u.kind == "postgresql" and u.password == "from-secret" and u.host == "pg"
    with pytest.raises(ConfigError, match=r"hub\.db\.url"):
        from_z2jh_values({"hub": {"db": {"type": "mysql"}}})
    with pytest.raises(ConfigError, match=r"hub\.db\.type"):
        from_z2jh_values({"hub": {"db": {"type": "oracle", "url": "x"}}})
