"""`jdr list` never needs SQLAlchemy or cryptography for a file:// repository and its default SQLite catalog
(issue 12: `jdr list` in 0.5 s, half of which was importing SQLAlchemy): it builds and syncs the catalog with
sqlite3, and a backup indexes its new run there, so the first listing after a backup is a plain read.
Deterministic: it checks what is imported and what the catalog holds, not the time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dr.catalog import Catalog, lite
from tests.fixtures.sandbox import Sandbox, describe
from tests.importprobe import heavy, run_probed

LIGHT_NEVER = ("dr.catalog.index", "dr.catalog.schema", "dr.operations.inspect", "cryptography", "dr.crypto.age")


def _list(sb: Sandbox, *args: str) -> tuple[list[dict[str, object]], set[str]]:
    done, modules = run_probed("--json", "list", *args, env=sb.env, cwd=sb.root)
    try:
        return json.loads(done.stdout), modules
    except ValueError as e:
        raise AssertionError(describe(done)) from e


def _light(modules: set[str]) -> list[str]:
    return heavy(modules) + sorted(m for m in modules if m.split(".")[0] in LIGHT_NEVER or m in LIGHT_NEVER)


def test_list_builds_syncs_and_reads_the_catalog_without_sqlalchemy(make_sandbox: Callable[..., Sandbox],
                                                                     tmp_path: Path) -> None:
    sb = make_sandbox(f"file://{tmp_path / 'repo'}")
    first = sb.jdr_json("backup", "--user", "alice")["run"]
    assert not list(Path(sb.env["XDG_CACHE_HOME"]).rglob("catalog-*.sqlite"))  # a backup creates none
    built, modules = _list(sb)  # no catalog yet: built with sqlite3
    assert [r["id"] for r in built] == [first] and built[0]["volumes"] == 1
    assert _light(modules) == []
    (catalog,) = Path(sb.env["XDG_CACHE_HOME"]).rglob("catalog-*.sqlite")
    url = f"sqlite:///{catalog}"
    warm, modules = _list(sb)
    assert warm == built and _light(modules) == []

    # The next backup indexes its run in the catalog: before any listing, it is up to date. (It needs neither
    # SQLAlchemy nor, the repository being unencrypted, cryptography either.)
    done, modules = run_probed("--json", "backup", "--user", "alice", "--user", "bob", env=sb.env, cwd=sb.root)
    backup = json.loads(done.stdout)
    assert backup["status"] == "complete", describe(done)
    assert sorted(m for m in modules if m.split(".")[0] in ("sqlalchemy", "cryptography")) == []
    second = backup["run"]
    repo = sb.repo()
    fresh = lite.list_runs(url, repo.run_ids(), repository_url=repo.url, repository_id=repo.id)
    assert fresh is not None and [r.id for r in fresh] == [second, first]
    after, modules = _list(sb)
    assert [r["id"] for r in after] == [second, first] and after[0]["volumes"] == 2
    assert _light(modules) == []
    mine, modules = _list(sb, "--user", "bob")
    assert [r["id"] for r in mine] == [second] and mine[0]["user_status"] == "ok" and _light(modules) == []
    assert _list(sb, "--user", "carol")[0] == []

    # What sqlite3 built and the backup added is the catalog SQLAlchemy builds from the stored manifests.
    with Catalog(url) as light, Catalog.sqlite(tmp_path / "rebuilt.sqlite", repository_url=repo.url,
                                               repository_id=repo.id) as rebuilt:
        rebuilt.rebuild(repo.manifests())
        assert light.dump() == rebuilt.dump()
        assert not light.is_stale(repo.run_ids())

    # A run the catalog does not know (committed by another host, whose backup indexed it in its own
    # catalog): the listing syncs it, still without SQLAlchemy; a deleted catalog is rebuilt the same way.
    third = sb.jdr_json("backup", "--user", "alice", env={"XDG_CACHE_HOME": str(tmp_path / "elsewhere")})["run"]
    synced, modules = _list(sb)
    assert [r["id"] for r in synced] == [third, second, first] and _light(modules) == []
    for p in catalog.parent.glob(catalog.name + "*"):
        p.unlink()
    rebuilt_rows, modules = _list(sb)
    assert rebuilt_rows == synced and _light(modules) == []
