"""``jdr show`` prints a readable summary of a run (no Python dicts), and a configuration error names the
file it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.sandbox import Sandbox, describe


def test_show_is_a_readable_summary(make_sandbox: Any, tmp_path: Path) -> None:
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    assert sb.run_jdr("backup").returncode == 0
    doc = sb.jdr_json("show", "latest")
    shown = sb.run_jdr("show", "latest")
    assert shown.returncode == 0, describe(shown)
    out = shown.stdout
    assert "{'" not in out and "'}" not in out  # no repr of a dict anywhere
    lines = out.splitlines()
    assert lines[0] == f"run {doc['run']}: complete"
    assert f"  deployment  local (hub_db {sb.hub_db}, homes {sb.homes})" in lines
    assert f"  volumes     {len(doc['volumes'])}: {len(doc['volumes'])} ok, 0 failed" in lines
    assert any(line.startswith("  size        ") and " stored by this run" in line for line in lines)
    alice = next(v for v in doc["volumes"] if v["user"] == "alice")
    assert alice["archive"]["sha256"] in out  # checksums are still shown
    assert shown.stderr == ""  # no library log lines either


def test_a_configuration_error_names_the_file(make_sandbox: Any, tmp_path: Path) -> None:
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    sb.config.write_text(sb.config.read_text() + "retention: {keep_daily: seven}\n")
    proc = sb.run_jdr("list")
    assert proc.returncode == 2
    assert "retention.keep_daily: expected an integer" in proc.stderr and str(sb.config) in proc.stderr
    sb.config.write_text("deployment: [unclosed\n")
    proc = sb.run_jdr("list")
    assert proc.returncode == 2 and str(sb.config) in proc.stderr and "not valid YAML" in proc.stderr
