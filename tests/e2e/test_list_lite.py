"""`jdr list` over an up-to-date SQLite catalog reads it with sqlite3 alone (issue 12: `jdr list` in 0.5 s,
half of which was importing SQLAlchemy). Deterministic: it checks what is imported, not the time."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.sandbox import Sandbox, describe

# (cryptography is still imported: dr.repository.repository needs dr.crypto for its types and keyrings.)
HEAVY = ("sqlalchemy", "boto3", "botocore", "kubernetes", "jupyterhub", "zstandard")

_PROBE = """
import json, sys
sys.argv = ["jdr", *json.loads(sys.argv[1])]
from dr.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _list(sb: Sandbox, *args: str) -> tuple[list[dict[str, object]], set[str]]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(["--json", "list", *args])],
                          capture_output=True, text=True, env=sb.env, cwd=sb.root, check=False)
    assert done.returncode == 0, describe(done)
    return json.loads(done.stdout), set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_list_of_a_synced_catalog_imports_no_sqlalchemy(make_sandbox: Callable[..., Sandbox],
                                                        tmp_path: Path) -> None:
    sb = make_sandbox(f"file://{tmp_path / 'repo'}")
    first = sb.jdr_json("backup", "--user", "alice")["run"]
    # a backup with no metrics or webhook configured leaves the catalog to the next listing: that one syncs
    # it (SQLAlchemy); the listings after it read it lightly
    synced, modules = _list(sb)
    assert [r["id"] for r in synced] == [first] and "sqlalchemy" in modules
    warm, modules = _list(sb)
    assert [r["id"] for r in warm] == [first] and warm[0]["volumes"] == 1
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []
    assert "dr.catalog.index" not in modules and "dr.operations.inspect" not in modules
    mine, modules = _list(sb, "--user", "alice")
    assert [r["id"] for r in mine] == [first] and mine[0]["user_status"] == "ok"
    assert "sqlalchemy" not in modules
    assert _list(sb, "--user", "bob")[0] == []
    # without its catalog, `jdr list` builds one (SQLAlchemy), and the next listing reads it lightly again
    catalogs = list(Path(sb.env["XDG_CACHE_HOME"]).rglob("catalog-*.sqlite"))
    assert len(catalogs) == 1
    for p in catalogs[0].parent.glob(catalogs[0].name + "*"):
        p.unlink()
    rebuilt, modules = _list(sb)
    assert rebuilt == warm and "sqlalchemy" in modules
    again, modules = _list(sb)
    assert again == warm and "sqlalchemy" not in modules
