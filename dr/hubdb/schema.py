"""Whether a hub database's schema revision can be run by a JupyterHub.

JupyterHub migrates its database with alembic and never downgrades: a database written by a newer hub
breaks an older one. The revisions a JupyterHub can run are the files of its ``jupyterhub/alembic/versions``
directory. They are read as text, without importing ``jupyterhub`` (importing it is slow, and jdr must
work where it is not installed).
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

VerdictKind = Literal["ok", "refuse", "warn"]


@dataclass(frozen=True)
class Verdict:
    """The answer to "may this database be restored under that hub?"."""

    kind: VerdictKind
    message: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


@dataclass(frozen=True)
class Revision:
    """One alembic migration file: its revision and the revision(s) it upgrades from."""

    revision: str
    down: tuple[str, ...]


def jupyterhub_versions_dir() -> Path | None:
    """``jupyterhub/alembic/versions`` of the JupyterHub installed in this Python, or None."""
    try:
        spec = importlib.util.find_spec("jupyterhub")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        versions = Path(location) / "alembic" / "versions"
        if versions.is_dir():
            return versions
    return None


def read_revisions(versions_dir: Path) -> list[Revision]:
    """Parse every migration file of an alembic ``versions`` directory (module-level assignments only)."""
    found: list[Revision] = []
    for path in sorted(versions_dir.glob("*.py")):
        parsed = _parse_migration(path.read_text(encoding="utf-8"))
        if parsed is not None:
            found.append(parsed)
    return found


def known_revisions(versions_dir: Path | None = None) -> set[str] | None:
    """The alembic revisions the installed JupyterHub can run; None when JupyterHub is not installed."""
    versions_dir = versions_dir or jupyterhub_versions_dir()
    if versions_dir is None:
        return None
    return {r.revision for r in read_revisions(versions_dir)}


def head_revision(versions_dir: Path | None = None) -> str | None:
    """The newest revision (the one no other migration names as its down_revision), when there is
    exactly one; None when JupyterHub is not installed or the history has several heads."""
    versions_dir = versions_dir or jupyterhub_versions_dir()
    if versions_dir is None:
        return None
    revisions = read_revisions(versions_dir)
    downs = {d for r in revisions for d in r.down}
    heads = [r.revision for r in revisions if r.revision not in downs]
    return heads[0] if len(heads) == 1 else None


def check_revision(revision: str | None, known: set[str] | None, head: str | None = None) -> Verdict:
    """Decide whether a database stamped ``revision`` may be restored under a hub that knows ``known``.

    ``ok`` when the hub knows the revision (it runs it as is or upgrades it); ``refuse`` when it does not
    know it, because then the database was written by a newer JupyterHub; ``warn`` when there is nothing
    to compare (no revision recorded, or no JupyterHub to compare with).
    """
    if revision is None:
        return Verdict("warn", "the database has no alembic revision; cannot check that this JupyterHub "
                               "can run it")
    if known is None:
        return Verdict("warn", f"database schema revision {revision} cannot be checked: JupyterHub is not "
                               "installed here")
    if revision in known:
        return Verdict("ok", f"database schema revision {revision} is known to this JupyterHub")
    newest = head or "an older revision"
    return Verdict(
        "refuse",
        f"database schema revision {revision} is newer than this JupyterHub (knows up to {newest}); "
        "restoring it would break the hub — restore with a JupyterHub image at least as new as the one "
        "that wrote it",
    )


def _parse_migration(source: str) -> Revision | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    values: dict[str, object] = {}
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value is not None:
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    revision = values.get("revision")
    if not isinstance(revision, str) or not revision:
        return None
    down = values.get("down_revision")
    if isinstance(down, str):
        downs: tuple[str, ...] = (down,)
    elif isinstance(down, (tuple, list)):
        downs = tuple(str(d) for d in down)
    else:
        downs = ()
    return Revision(revision=revision, down=downs)
