"""The administrator of the season: runs jdr at simulated times, with the injected clock (``JDR_NOW``).

Commands run in-process through click's CliRunner (hundreds of invocations would otherwise cost a Python
start-up each); the kill faults run a real ``jdr`` subprocess and SIGKILL it at a test hook's pause point
(dr/util/testhooks.py). Every command gets ``--json`` and its document is returned with its exit code.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dr.cli.main import cli
from dr.util.timefmt import ENV_NOW, iso
from tests.fixtures.sandbox import Sandbox


@dataclass
class Outcome:
    args: tuple[str, ...]
    now: datetime
    code: int
    doc: Any
    output: str
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"jdr {' '.join(self.args)} at {iso(self.now)} exited {self.code}\n"
                f"{self.output[-4000:]}")


class Operator:
    """Runs ``jdr`` on the sandbox's configuration (or another one) at a simulated time."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.log: list[Outcome] = []

    def env(self, now: datetime) -> dict[str, str]:
        return {ENV_NOW: iso(now), "XDG_CACHE_HOME": self.sb.env["XDG_CACHE_HOME"], "JDR_LOG_FORMAT": "text"}

    def run(self, now: datetime, *args: str, config: Path | None = None, expect: int | None = 0) -> Outcome:
        """``jdr --json ARGS`` in-process at ``now``; asserts the exit code unless ``expect`` is None."""
        argv = ["--config", str(config or self.sb.config), "--json", *args]
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        t0 = time.monotonic()
        try:
            result = CliRunner().invoke(cli, argv, env=self.env(now), catch_exceptions=True)
        finally:
            root.handlers[:] = handlers  # jdr's set-up replaces them with one on CliRunner's stream
            root.setLevel(level)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"jdr {' '.join(args)} crashed at {iso(now)}") from result.exception
        out = Outcome(tuple(args), now, result.exit_code, _json_doc(result.stdout), result.output,
                      time.monotonic() - t0)
        self.log.append(out)
        if expect is not None:
            assert out.code == expect, str(out)
        return out

    def timings(self) -> str:
        """Wall time spent per command, for the season's report."""
        per: dict[str, list[float]] = {}
        for o in self.log:
            per.setdefault(o.args[0], []).append(o.seconds)
        return ", ".join(f"{k}: {len(v)}x {sum(v):.1f}s" for k, v in sorted(per.items()))

    def kill_at(self, now: datetime, point: str, *args: str, after: int = 0, timeout: float = 60) -> str:
        """Run ``jdr ARGS`` as a real process at ``now``, SIGKILL it when it pauses at ``point``; return its
        stderr. Fails if it ends without reaching the point."""
        return self.sb.kill_at(point, "--json", *args, after=after, timeout=timeout, env=self.env(now))


def _json_doc(stdout: str) -> Any:
    text = stdout.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unparsed": text[-2000:]}
