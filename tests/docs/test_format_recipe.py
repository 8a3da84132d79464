"""docs/FORMAT.md's "Restoring by hand, without jdr", run exactly as written (issue 10, item 9).

The shell code blocks of that section are taken from the markdown and run with bash, unchanged, in an
empty directory, against repositories made by real ``jdr backup`` runs: ``file://`` and S3 (SeaweedFS),
encrypted and not. The only inputs are the variables the document's own ``variables`` block names (the
test sets them instead of that block's example values). A block marked ``<!-- recipe: TAG -->`` runs only
where its tag applies: ``s3``/``file`` by repository, ``plain``/``encrypted`` by encryption,
``put-back`` always; ``kubernetes`` (the hub Secret) is not run here, a local hub has no Secret (its
JSON is the same ``secret_record`` the Kubernetes tier restores). Afterwards the restored home equals the
backed-up one entry by entry (owners, modes, times, links), and the hub database is the backed-up one,
with the old database and its stale ``-wal``/``-shm`` moved aside and the owner kept.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from dr.crypto.mac import MacKey
from tests.fixtures.sandbox import Sandbox, describe
from tests.treeutil import snapshot_tree, tree_diff

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
SECTION = "## Restoring by hand, without jdr"
VARIABLES = {"REPO", "RUN", "WHO", "KEY_FILE", "MAC_KEY_FILE", "HUB_DB"}
_BLOCK = re.compile(r"(?:<!-- recipe: (?P<tag>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.DOTALL)


def recipe_blocks() -> list[tuple[str, str]]:
    """(tag, code) of every code block of the section, in order; tag "" for a block without a marker."""
    text = FORMAT_MD.read_text()
    section = text[text.index(SECTION):]
    nxt = section.find("\n## ", len(SECTION))
    section = section if nxt < 0 else section[:nxt]
    blocks = [(m["tag"] or "", m["code"]) for m in _BLOCK.finditer(section)]
    assert all(m["lang"] == "sh" for m in _BLOCK.finditer(section)), "every block of the recipe is sh"
    return blocks


def test_the_recipe_names_exactly_the_variables_the_test_sets() -> None:
    blocks = recipe_blocks()
    variables = [code for tag, code in blocks if tag == "variables"]
    assert len(variables) == 1
    names = {line.split("=", 1)[0] for line in variables[0].splitlines() if "=" in line}
    assert names == VARIABLES
    tags = {tag for tag, _ in blocks}
    assert tags <= {"", "variables", "s3", "file", "plain", "encrypted", "put-back", "kubernetes"}, tags
    assert {"s3", "file", "plain", "encrypted", "put-back", "kubernetes"} <= tags


def script(kind: str, encrypted: bool) -> str:
    wanted = {"", "put-back", kind, "encrypted" if encrypted else "plain"}
    code = [c for tag, c in recipe_blocks() if tag in wanted]
    return "set -euo pipefail\n" + "\n".join(code)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_format_md_restores_a_home_and_the_hub_database_by_hand(sandbox: Sandbox, tmp_path: Path,
                                                                  encrypted: bool) -> None:
    sb = sandbox
    key_file = tmp_path / "age.key"
    if encrypted:
        subprocess.run(["age-keygen", "-o", str(key_file)], check=True, capture_output=True)
    # Manifest MACs on (docs/FORMAT.md, "Manifest MAC"): the recipe checks the run's MAC by hand, with the
    # older key of a rotated key file second (the run is signed by the first).
    mac_file = tmp_path / "mac.key"
    mac_file.write_text(f"# jdr MAC keys\n{MacKey.generate().text()}\n{MacKey.generate().text()}\n")
    sb.write_config(encryption={"mac_key_file": str(mac_file), **({"key_file": str(key_file)} if encrypted else {})})
    who = "alice"  # the home with every kind of entry (tests.treeutil.build_sample_home)
    doc = sb.jdr_json("backup")
    run = doc["run"]
    if encrypted:
        assert doc["manifest"]["volumes"][0]["archive"]["key"].endswith(".tar.zst.age")
    home = sb.home(who)
    original = snapshot_tree(home)
    with sqlite3.connect(sb.hub_db) as conn:
        users = sorted(r[0] for r in conn.execute("SELECT name FROM users"))
    conn.close()
    os.chown(sb.hub_db, 1000, 1000)
    # The disaster: the home is damaged, the hub database is garbage with a stale WAL beside it.
    (home / "notebooks").rename(home / "lost")
    (home / "junk.txt").write_text("not in the backup\n")
    sb.hub_db.write_bytes(b"garbage")
    Path(f"{sb.hub_db}-wal").write_bytes(b"stale wal")
    Path(f"{sb.hub_db}-shm").write_bytes(b"stale shm")

    kind = "file" if sb.repo_url.startswith("file://") else "s3"
    work = tmp_path / "by-hand"
    work.mkdir()
    env = {**sb.env, "REPO": sb.repo_url.removeprefix("file://"), "RUN": run, "WHO": who,
           "KEY_FILE": str(key_file), "MAC_KEY_FILE": str(mac_file), "HUB_DB": str(sb.hub_db)}
    proc = subprocess.run(["bash", "-c", script(kind, encrypted)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, describe(proc)  # type: ignore[arg-type]
    assert "manifest MAC verified" in proc.stdout, describe(proc)  # type: ignore[arg-type]

    assert tree_diff(original, snapshot_tree(home)) == []
    assert (Path(f"{home}.before-restore") / "junk.txt").exists()  # the replaced home is kept
    with sqlite3.connect(f"file:{sb.hub_db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert sorted(r[0] for r in conn.execute("SELECT name FROM users")) == users
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == \
            doc["manifest"]["hub"]["alembic_revision"]
    conn.close()
    assert not Path(f"{sb.hub_db}-wal").exists() or Path(f"{sb.hub_db}-wal").read_bytes() != b"stale wal"
    assert Path(f"{sb.hub_db}-wal.before-restore").read_bytes() == b"stale wal"
    assert Path(f"{sb.hub_db}.before-restore").read_bytes() == b"garbage"
    st = sb.hub_db.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)
