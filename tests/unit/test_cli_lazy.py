"""Start-up cost of ``jdr``: command modules load lazily, and heavy libraries stay out of paths that do not
need them (issue 12: ``jdr --version`` <= 0.15 s). Deterministic: it checks what is imported, not the time."""

from __future__ import annotations

import click

from dr.cli.main import COMMAND_MODULES, cli, load_all_commands
from tests.importprobe import heavy as _heavy
from tests.importprobe import run_probed


def _modules_after(*argv: str) -> set[str]:
    return run_probed(*argv)[1]


def test_version_imports_no_command_and_no_heavy_library() -> None:
    modules = _modules_after("--version")
    assert _heavy(modules) == [] and "yaml" not in modules and "cryptography" not in modules
    assert sorted(m for m in modules if m.startswith("dr.")) == ["dr.cli", "dr.cli.main", "dr.errors"]


def test_help_lists_every_command_without_heavy_libraries() -> None:
    done, modules = run_probed("--help")
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    visible = {n for n in COMMAND_MODULES if n != "agent"}  # agent is hidden: for mover pods
    assert listed == visible
    assert _heavy(modules) == []


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
