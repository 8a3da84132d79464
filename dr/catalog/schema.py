"""The catalog's tables as SQLAlchemy Core tables, built from their one definition in
:mod:`dr.catalog.tables` (which :mod:`dr.catalog.lite` turns into SQLite DDL without SQLAlchemy)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.types import TypeEngine

from dr.catalog import tables as t
from dr.catalog.tables import SCHEMA_VERSION

metadata = MetaData()


def _type(c: t.Col) -> TypeEngine[Any]:
    if c.kind == "string":
        return String(c.length)
    kinds: dict[str, type[TypeEngine[Any]]] = {"text": Text, "bigint": BigInteger, "int": Integer, "bool": Boolean}
    return kinds[c.kind]()


def _table(d: t.Table) -> Table:
    return Table(d.name, metadata,
                 *(Column(c.name, _type(c), primary_key=c.primary_key, nullable=c.nullable) for c in d.columns),
                 *(Index(name, column) for name, column in d.indexes))


meta = _table(t.META)
runs = _table(t.RUNS)
items = _table(t.ITEMS)
artifacts = _table(t.ARTIFACTS)

TABLES = (meta, runs, items, artifacts)
DATA_TABLES = (runs, items, artifacts)

__all__ = ["DATA_TABLES", "SCHEMA_VERSION", "TABLES", "artifacts", "items", "meta", "metadata", "runs"]
