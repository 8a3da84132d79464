"""Which modules a ``jdr`` command imports: it runs the CLI in a fresh interpreter and reports
``sys.modules`` at exit (issue 12: start-up cost). Deterministic: it checks what is imported, not the time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Libraries that a light path (`jdr --version`, `--help`, `jdr list`) must not load.
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


def run_probed(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``jdr ARGV`` in a new interpreter: its completed process (the exit code is lost: the probe
    catches SystemExit; check stdout) and the names of every module it imported."""
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(argv))], capture_output=True,
                          text=True, env=env, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, set(json.loads(done.stderr.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    """The modules of ``modules`` that belong to a HEAVY library."""
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)
