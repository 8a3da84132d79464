"""The catalog's tables, as plain data: the one definition of its schema.

:mod:`dr.catalog.schema` builds SQLAlchemy tables from it (any database), :mod:`dr.catalog.lite` SQLite DDL
(the default catalog, without importing SQLAlchemy). tests/contract/test_catalog_lite.py checks that the two
create the same SQLite schema. Bump SCHEMA_VERSION on any change: an older or unknown catalog is dropped
and rebuilt from the manifests, never migrated (it is only a cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SCHEMA_VERSION = 1

Kind = Literal["string", "text", "bigint", "int", "bool"]


@dataclass(frozen=True)
class Col:
    name: str
    kind: Kind
    length: int | None = None  # "string" only
    nullable: bool = False
    primary_key: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Col, ...]
    indexes: tuple[tuple[str, str], ...] = ()  # (index name, column)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


# Key/value facts about the catalog itself: schema_version, repository_url, repository_id, run_set.
META = Table("jdr_meta", (
    Col("key", "string", 64, primary_key=True),
    Col("value", "text"),
))

# One row per run (manifest). Times are UTC microseconds since the epoch: exact, sortable, portable.
RUNS = Table("jdr_runs", (
    Col("id", "string", 64, primary_key=True),
    Col("time_us", "bigint"),  # started
    Col("finished_us", "bigint"),
    Col("status", "string", 16),
    Col("users", "int"),  # distinct users with a volume in the run
    Col("volumes", "int"),
    Col("failed", "int"),  # items (volumes, hub) that failed
    Col("bytes", "bigint"),  # file content read
    Col("stored", "bigint"),  # bytes of the artifacts this run wrote itself
    Col("files", "bigint"),
    Col("hub", "bool"),  # the run holds a hub database
    Col("jdr_version", "string", 64),
    Col("manifest", "text"),  # the manifest as canonical JSON
), indexes=(("jdr_runs_time", "time_us"),))

# One row per item of a run: the hub (kind "hub", key "hub") and each volume (kind "volume").
ITEMS = Table("jdr_items", (
    Col("run_id", "string", 64, primary_key=True),
    Col("key", "string", 255, primary_key=True),
    Col("kind", "string", 16),
    Col("user", "text", nullable=True),  # raw username; NULL for the hub and for PVCs without a user
    Col("server", "text"),
    Col("status", "string", 16),
    Col("method", "string", 32),
    Col("bytes", "bigint"),
    Col("files", "bigint"),
    Col("reused_from", "string", 64, nullable=True),
    Col("error", "text", nullable=True),
), indexes=(("jdr_items_user", "user"),))

# One row per artifact a run references (its own, and those it reuses from earlier runs).
ARTIFACTS = Table("jdr_artifacts", (
    Col("run_id", "string", 64, primary_key=True),
    Col("key", "string", 1024, primary_key=True),
    Col("item", "string", 255),
    Col("size", "bigint"),
    Col("sha256", "string", 64),
    Col("encoding", "string", 32),
    Col("writer", "string", 64),  # the run that wrote it
), indexes=(("jdr_artifacts_key", "key"),))

TABLES = (META, RUNS, ITEMS, ARTIFACTS)
DATA_TABLES = (RUNS, ITEMS, ARTIFACTS)
