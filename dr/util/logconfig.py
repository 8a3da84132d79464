"""Keeping jdr's logging configuration while third-party code runs that would replace it."""

from __future__ import annotations

import logging.config
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def keep_logging_config() -> Iterator[None]:
    """Make ``logging.config.fileConfig`` a no-op inside the block.

    JupyterHub's alembic ``env.py`` (run when ``jupyterhub.orm`` creates or stamps a database outside a
    running hub) calls ``fileConfig(alembic.ini)``: that replaces the root handlers and sends alembic's INFO
    lines ("Context impl SQLiteImpl.", "Running stamp_revision") to stderr, into jdr's output. env.py imports
    ``fileConfig`` each time it runs, so replacing the attribute for the call is enough. Not thread-safe;
    meant for the CLI's single thread.
    """
    original = logging.config.fileConfig
    logging.config.fileConfig = lambda *args, **kwargs: None
    try:
        yield
    finally:
        logging.config.fileConfig = original
