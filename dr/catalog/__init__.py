"""The catalog: an index of runs, items and artifacts in a SQL database (SQLite by default).

It is only an index. Everything in it comes from the repository's manifests, it can be dropped and rebuilt
at any time (:meth:`Catalog.rebuild`, ``jdr catalog rebuild``), and no restore ever needs it. It makes
``list``, ``show``, ``--at`` and prune fast when a repository holds thousands of runs.
"""

from dr.catalog.index import Catalog, RunRow, SyncResult, run_set_digest
from dr.catalog.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Catalog", "RunRow", "SyncResult", "run_set_digest"]
