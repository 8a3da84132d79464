"""The hub database: consistent capture of a live JupyterHub SQLite database, what it holds, and whether
its schema revision fits a given JupyterHub. Uses only the standard library's ``sqlite3``."""

from dr.hubdb.capture import capture_database, check_integrity, inspect_database
from dr.hubdb.info import DbInfo, ServerInfo
from dr.hubdb.schema import Verdict, check_revision, head_revision, known_revisions

__all__ = [
    "DbInfo",
    "ServerInfo",
    "Verdict",
    "capture_database",
    "check_integrity",
    "check_revision",
    "head_revision",
    "inspect_database",
    "known_revisions",
]
