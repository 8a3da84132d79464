"""The progress reporter on a (forced) terminal: totals and ETA shown, parallel items summed, nothing drawn
before the first report (so a prompt stays readable), log lines with totals when not on a terminal."""

from __future__ import annotations

import io
import logging
import re
import threading

import pytest
from rich.console import Console

from dr.cli.progress import ProgressReporter, progress_reporter


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(force_terminal=True, file=out, width=120, color_system=None), out


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)


def test_parallel_items_are_summed_never_more_than_the_total() -> None:
    console, out = terminal()
    with progress_reporter("restore", console=console) as progress:
        progress.set_total(6, 600)
        start = threading.Barrier(3)
        seen: list[tuple[int, int]] = []

        def volume(size: int) -> None:
            start.wait()
            for done in range(0, size + 1, 50):  # cumulative per item, as extraction reports it
                progress(done // 100, done)
                seen.append(progress.done)

        threads = [threading.Thread(target=volume, args=(n,)) for n in (100, 200, 300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert progress.done == (6, 600)
        assert all(b <= 600 for _f, b in seen)
        progress.refresh()
    text = plain(out.getvalue())
    assert "600/600 bytes" in text and "6/6 files" in text
    assert "645" not in text


def test_sequential_items_in_one_thread_add_up_and_totals_grow_with_each_listing() -> None:
    console, out = terminal()
    progress = ProgressReporter("backup", console=console)
    progress.expect(3, 3000)  # the first volume's listing
    for done in (1000, 2000, 3000):
        progress(done // 1000, done)
    progress.expect(2, 2000)  # the next volume's listing
    for done in (500, 2000):
        progress(1, done)
    assert progress.done == (4, 5000) and progress.total == (5, 5000)
    progress.refresh()
    text = plain(out.getvalue())
    progress.close()
    assert "5.0/5.0 kB" in text and "/5 files" in text
    assert re.search(r"\d+:\d\d:\d\d", text)  # an ETA, not "-:--:--"


def test_nothing_is_drawn_before_the_first_report() -> None:
    console, out = terminal()
    with progress_reporter("restore", console=console) as progress:
        progress.set_total(1, 100)
        assert out.getvalue() == ""  # a prompt shown now is not overwritten
        progress(1, 50)
        assert out.getvalue() != ""


def test_without_a_terminal_log_lines_carry_the_total(caplog: pytest.LogCaptureFixture) -> None:
    progress = ProgressReporter("restore", terminal=False, log_every=0)
    progress.set_total(10, 10 * 2**20)
    with caplog.at_level(logging.INFO, logger="jdr.progress"):
        progress(5, 5 * 2**20)
    assert "restore: 5 files, 5.0 MiB done of 10 files, 10.0 MiB" in caplog.text
    assert "s left" in caplog.text
