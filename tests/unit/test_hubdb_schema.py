"""Schema revision verdicts, against the alembic history of the JupyterHub installed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dr.hubdb.schema import (
    check_revision,
    head_revision,
    jupyterhub_versions_dir,
    known_revisions,
    read_revisions,
)

REPO = Path(__file__).resolve().parents[2]


def test_known_revisions_are_the_installed_jupyterhubs_alembic_history() -> None:
    from alembic.script import ScriptDirectory

    versions = jupyterhub_versions_dir()
    assert versions is not None and versions.name == "versions"
    scripts = ScriptDirectory(str(versions.parent), version_locations=[str(versions)])
    expected = {s.revision for s in scripts.walk_revisions()}
    assert known_revisions() == expected
    assert head_revision() == scripts.get_current_head()


def test_the_installed_head_is_ok() -> None:
    known = known_revisions()
    verdict = check_revision(head_revision(), known)
    assert verdict.kind == "ok" and verdict.ok


def test_an_older_known_revision_is_ok() -> None:
    # 19c0846f6344 is JupyterHub 0.5's base revision: an older hub's DB that this hub upgrades.
    assert check_revision("19c0846f6344", known_revisions()).kind == "ok"


def test_a_newer_revision_is_refused_with_the_documented_message() -> None:
    head = head_revision()
    verdict = check_revision("0123456789ab", known_revisions(), head)
    assert verdict.kind == "refuse" and not verdict.ok
    assert verdict.message == (
        f"database schema revision 0123456789ab is newer than this JupyterHub (knows up to {head}); "
        "restoring it would break the hub — restore with a JupyterHub image at least as new as the one "
        "that wrote it"
    )


@pytest.mark.parametrize(("revision", "known"), [(None, {"abc"}), ("abc", None), (None, None)])
def test_nothing_to_compare_is_a_warning(revision: str | None, known: set[str] | None) -> None:
    verdict = check_revision(revision, known)
    assert verdict.kind == "warn"
    assert verdict.message


def _migration(rev: str, down: str) -> str:
    return f'"""{rev}"""\nrevision = "{rev}"\ndown_revision = {down}\nbranch_labels = None\n'


def test_head_of_a_linear_history_and_of_a_branched_one(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(_migration("aaa", "None"))
    (tmp_path / "b.py").write_text(_migration("bbb", "'aaa'"))
    (tmp_path / "c.py").write_text(_migration("ccc", '"bbb"'))
    (tmp_path / "notes.py").write_text("x = 1\n")  # not a migration: ignored
    assert known_revisions(tmp_path) == {"aaa", "bbb", "ccc"}
    assert head_revision(tmp_path) == "ccc"
    (tmp_path / "d.py").write_text(_migration("ddd", "'bbb'"))  # a second head
    assert head_revision(tmp_path) is None
    (tmp_path / "e.py").write_text(_migration("eee", "('ccc', 'ddd')"))  # a merge
    assert head_revision(tmp_path) == "eee"
    assert {r.revision: r.down for r in read_revisions(tmp_path)}["eee"] == ("ccc", "ddd")


def _run_without_site_packages(code: str) -> str:
    prog = ("import sys; sys.path = [p for p in sys.path if 'site-packages' not in p]; "
            f"sys.path.insert(0, {str(REPO)!r}); " + code)
    return subprocess.run([sys.executable, "-c", prog], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_without_jupyterhub_installed_there_is_nothing_known() -> None:
    out = _run_without_site_packages(
        "from dr.hubdb.schema import known_revisions, head_revision; "
        "print(known_revisions(), head_revision())")
    assert out == "None None"


def test_jdr_hub_modules_do_not_import_jupyterhub() -> None:
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, dr.hubdb, dr.hubapi; from dr.hubdb import known_revisions; known_revisions(); "
         "print('jupyterhub' in sys.modules, 'requests' in sys.modules)"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    assert out == "False False"
