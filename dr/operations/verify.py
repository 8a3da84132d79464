"""``jdr verify``: are the runs' artifacts all there and intact?

Shallow: every artifact of the run exists with its recorded size and its bytes hash to the recorded
SHA-256. Deep (``--deep``): also decompress every archive and check every file against the index, and
restore the hub DB to a temporary file and run ``PRAGMA integrity_check`` on it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr.archive.index import load_index
from dr.archive.verify import verify_archive
from dr.errors import EXIT_OK, EXIT_PARTIAL, JdrError
from dr.model import Artifact, Manifest
from dr.operations.restore import fetch_hub_db
from dr.repository.artifacts import drain
from dr.repository.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class VerifyResult:
    runs: list[str]
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    deep: bool = False
    warnings: list[str] = field(default_factory=list)  # do not change the exit code

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PARTIAL

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "checked": self.checked, "problems": self.problems, "deep": self.deep,
                "ok": self.ok, "warnings": self.warnings}


def verify_runs(repo: Repository, run_ref: str | None, deep: bool,
                on_item: Callable[[str], None] | None = None) -> VerifyResult:
    """Verify one run (``run_ref``) or, with None, every run. Problems are collected, not raised."""
    runs = [repo.resolve_run(run_ref)] if run_ref else repo.run_ids()
    result = VerifyResult(runs=runs, deep=deep)
    seen: set[str] = set()
    for run in runs:
        try:
            manifest = repo.load_manifest(run)
        except JdrError as e:
            result.problems.append(f"run {run}: {e}")
            continue
        _verify_manifest(repo, manifest, deep, result, seen, on_item)
    result.warnings += exposure_warnings(repo)
    return result


def exposure_warnings(repo: Repository) -> list[str]:
    """A warning when a file:// repository is readable or writable by other users than jdr's."""
    exposed = getattr(repo.store, "exposed", None)
    if exposed is None:  # S3: access is the bucket policy's business
        return []
    count, examples = exposed()
    if not count:
        return []
    return [f"the repository is readable or writable by other users: {count} directories and files have "
            f"group or other permissions (e.g. {', '.join(examples)}); it holds every home and the hub "
            f"database: chmod -R go-rwx {getattr(repo.store, 'root', repo.url)}"]


def _verify_manifest(repo: Repository, m: Manifest, deep: bool, result: VerifyResult, seen: set[str],
                     on_item: Callable[[str], None] | None) -> None:
    if m.hub is not None and m.hub.db is not None:
        if on_item:
            on_item(f"{m.run} hub database")
        if deep:
            with tempfile.TemporaryDirectory(prefix="jdr-verify-") as tmp:
                try:
                    info = fetch_hub_db(repo, m, Path(tmp) / "hub.sqlite")
                    if info.integrity != "ok":
                        result.problems.append(f"run {m.run} hub database: integrity_check: {info.integrity}")
                except JdrError as e:
                    result.problems.append(f"run {m.run} hub database: {e}")
            result.checked += 1
            seen.add(m.hub.db.key)
        else:
            _shallow(repo, m.run, "hub database", m.hub.db, result, seen)
        if m.hub.secret is not None:
            _shallow(repo, m.run, "hub secret", m.hub.secret, result, seen)
    for item in m.volumes:
        if item.status != "ok" or item.archive is None or item.index is None:
            continue
        if on_item:
            on_item(f"{m.run} {item.label}")
        if deep and item.archive.key not in seen:
            try:
                with repo.open_artifact(item.index) as src:
                    index = load_index(src)
                    drain(src)
                with repo.open_artifact(item.archive) as src:
                    report = verify_archive(src, index)
                    drain(src)
                result.problems += [f"run {m.run} {item.label}: {p}" for p in report.problems]
            except JdrError as e:
                result.problems.append(f"run {m.run} {item.label}: {e}")
            result.checked += 2
            seen.update((item.archive.key, item.index.key))
        else:
            _shallow(repo, m.run, item.label, item.archive, result, seen)
            _shallow(repo, m.run, f"{item.label} index", item.index, result, seen)


def _shallow(repo: Repository, run: str, label: str, art: Artifact, result: VerifyResult,
             seen: set[str]) -> None:
    if art.key in seen:
        return
    seen.add(art.key)
    result.checked += 1
    try:
        repo.verify_artifact(art)
    except JdrError as e:
        result.problems.append(f"run {run} {label}: {e}")
