"""Start-up cost of ``jdr``: command modules load lazily, and heavy libraries stay out of paths that do not
need them (issue 12: ``jdr --version`` <= 0.15 s). Deterministic: it checks what is imported, not the time."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from dr.cli.main import COMMAND_MODULES, cli, load_all_commands

HEAVY = ("boto3", "botocore", "kubernetes", "sqlalchemy", "zstandard", "rich", "jupyterhub")

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


def _modules_after(*argv: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(argv))], capture_output=True,
                          text=True, check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_version_imports_no_command_and_no_heavy_library() -> None:
    modules = _modules_after("--version")
    assert _heavy(modules) == [] and "yaml" not in modules and "cryptography" not in modules
    assert sorted(m for m in modules if m.startswith("dr.")) == ["dr.cli", "dr.cli.main", "dr.errors"]


def test_help_lists_every_command_without_heavy_libraries() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(["--help"])], capture_output=True,
                          text=True, check=True)
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    visible = {n for n in COMMAND_MODULES if n != "agent"}  # agent is hidden: for mover pods
    assert listed == visible
    assert _heavy(set(json.loads(done.stderr.strip().splitlines()[-1]))) == []


def test_the_lazy_table_matches_what_the_modules_register() -> None:
    load_all_commands()
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, modules in COMMAND_MODULES.items():
        cmd = cli.commands[name]
        assert cmd.callback is not None and cmd.callback.__module__ == modules[0]
    # agent's subcommands come from two modules; looking it up loads both.
    agent = cli.commands["agent"]
    assert isinstance(agent, click.Group) and "verify-volume" in agent.commands


def test_a_command_is_found_when_its_module_is_not_yet_loaded() -> None:
    modules = _modules_after("key", "--help")
    assert "dr.cli.key_cmd" in modules
    assert "dr.cli.commands" not in modules and "dr.cli.worker_cmd" not in modules
