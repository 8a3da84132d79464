"""``jdr restore`` on a real pseudo-terminal: the confirmation prompt is shown and answered before any
progress bar is drawn, and the bar shows a total (from the run's index) and an ETA."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

from tests.fixtures.sandbox import JDR, Sandbox


def run_on_pty(cmd: list[str], env: dict[str, str], cwd: Path, answer: bytes, prompt: bytes,
               timeout: float = 120) -> tuple[int, bytes]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True)
    os.close(slave)
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not chunk:
                    break
                out += chunk
                if not answered and prompt in out:
                    os.write(master, answer)
                    answered = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), out
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_restore_prompt_comes_before_the_bar_and_the_bar_has_a_total(make_sandbox: Any, tmp_path: Path) -> None:
    sb: Sandbox = make_sandbox(f"file://{tmp_path / 'repo'}")
    (sb.home("alice") / "big.bin").write_bytes(os.urandom(8 << 20))  # enough to be reported while it runs
    assert sb.run_jdr("backup").returncode == 0
    doc = sb.jdr_json("show", "latest")
    alice = next(v for v in doc["volumes"] if v["user"] == "alice")
    env = {**sb.env, "TERM": "xterm-256color", "COLUMNS": "160"}
    code, raw = run_on_pty([JDR, "restore", "--user", "alice"], env, sb.root, b"y\n", b"Proceed?")
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", raw.decode("utf-8", "replace"))
    assert code == 0, text[-3000:]
    prompt_at = text.index("Proceed?")
    bar = re.search(r"restore\s.*?(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) (?:bytes|kB|MB)", text)
    assert bar is not None, text[-3000:]
    assert bar.start() > prompt_at  # answered first, then the bar
    assert f"/{alice['files']} files" in text[bar.start():]  # the total from the run's index
    assert re.search(r"\d+:\d\d:\d\d|-:--:--", text[bar.start():])  # the ETA column is there
    assert "restore done" in text
