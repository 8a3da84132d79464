"""The adapter for a hub database on a server, by the kind of its URL."""

from __future__ import annotations

import os

from dr.errors import ConfigError
from dr.hubdb.server import ServerHubDb
from dr.hubdb.url import DbUrl


def server_database(url: DbUrl) -> ServerHubDb:
    """The :class:`ServerHubDb` for ``url`` (PostgreSQL or MySQL/MariaDB)."""
    if url.kind == "postgresql":
        from dr.hubdb.postgres import PostgresHubDb

        return PostgresHubDb(url)
    if url.kind == "mysql":
        from dr.hubdb.mysql import MysqlHubDb

        return MysqlHubDb(url)
    raise ConfigError(f"{url.redacted()}: not a database server URL")


def password_from_env(url: DbUrl, env_name: str, *, setting: str = "deployment.hub_db_password_env") -> DbUrl:
    """``url`` with the password from the environment variable ``env_name`` (unchanged when empty);
    ConfigError naming ``setting`` when the variable is not set."""
    if not env_name:
        return url
    value = os.environ.get(env_name)
    if value is None:
        raise ConfigError(f"{setting}: the environment variable {env_name} is not set",
                          hint="set it to the hub database's password (z2jh: hub.db.password)")
    return url.with_password(value)
