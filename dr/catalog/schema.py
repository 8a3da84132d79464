"""The catalog's tables (SQLAlchemy Core). Bump SCHEMA_VERSION on any change: an older or unknown catalog
is dropped and rebuilt from the manifests, never migrated (it is only a cache)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

SCHEMA_VERSION = 1

metadata = MetaData()

# Key/value facts about the catalog itself: schema_version, repository_url, repository_id, run_set.
meta = Table(
    "jdr_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# One row per run (manifest). Times are UTC microseconds since the epoch: exact, sortable, portable.
runs = Table(
    "jdr_runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("time_us", BigInteger, nullable=False),  # started
    Column("finished_us", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("users", Integer, nullable=False),  # distinct users with a volume in the run
    Column("volumes", Integer, nullable=False),
    Column("failed", Integer, nullable=False),  # items (volumes, hub) that failed
    Column("bytes", BigInteger, nullable=False),  # file content read
    Column("stored", BigInteger, nullable=False),  # bytes of the artifacts this run wrote itself
    Column("files", BigInteger, nullable=False),
    Column("hub", Boolean, nullable=False),  # the run holds a hub database
    Column("jdr_version", String(64), nullable=False),
    Column("manifest", Text, nullable=False),  # the manifest as canonical JSON
    Index("jdr_runs_time", "time_us"),
)

# One row per item of a run: the hub (kind "hub", key "hub") and each volume (kind "volume").
items = Table(
    "jdr_items", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("user", Text, nullable=True),  # raw username; NULL for the hub and for PVCs without a user
    Column("server", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("method", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("reused_from", String(64), nullable=True),
    Column("error", Text, nullable=True),
    Index("jdr_items_user", "user"),
)

# One row per artifact a run references (its own, and those it reuses from earlier runs).
artifacts = Table(
    "jdr_artifacts", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("item", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("encoding", String(32), nullable=False),
    Column("writer", String(64), nullable=False),  # the run that wrote it
    Index("jdr_artifacts_key", "key"),
)

TABLES = (meta, runs, items, artifacts)
DATA_TABLES = (runs, items, artifacts)
