"""The catalog: an index of runs, items and artifacts in a SQL database (SQLite by default).

It is only an index. Everything in it comes from the repository's manifests, it can be dropped and rebuilt
at any time (:meth:`Catalog.rebuild`, ``jdr catalog rebuild``), and no restore ever needs it. It makes
``list``, ``show``, ``--at`` and prune fast when a repository holds thousands of runs.

:class:`Catalog` (SQLAlchemy) is imported on first use, so that :mod:`dr.catalog.lite`, the plain
``sqlite3`` path behind ``jdr list`` and the backup's indexing of its new run, does not load SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dr.catalog.rows import RunRow, SyncResult, run_set_digest
from dr.catalog.tables import SCHEMA_VERSION

if TYPE_CHECKING:
    from dr.catalog.index import Catalog

__all__ = ["SCHEMA_VERSION", "Catalog", "RunRow", "SyncResult", "run_set_digest"]


def __getattr__(name: str) -> Any:
    if name == "Catalog":
        from dr.catalog.index import Catalog

        return Catalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
