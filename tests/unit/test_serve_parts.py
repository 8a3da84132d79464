"""Pure parts of ``jdr serve`` and of its restore contract: exact path selection, kept names, the
escaping preview renderer, the streamed zip, the limits."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from dr.archive.globs import exact_matcher
from dr.deployments.self_restore import kept_name
from dr.model import IndexEntry
from dr.serve.limits import RateLimiter, RestoreGate
from dr.serve.preview import previewable, render
from dr.serve.zipstream import write_zip


def _e(path: bytes, type_: str = "file") -> IndexEntry:
    return IndexEntry(path=path, type=type_)  # type: ignore[arg-type]


def test_exact_matcher_selects_exact_paths_and_what_is_under_a_directory() -> None:
    select = exact_matcher(["thesis[1].ipynb", "project"])
    assert select(_e(b"thesis[1].ipynb"))
    assert not select(_e(b"thesis1.ipynb"))  # no globbing: [1] is two plain characters
    assert select(_e(b"project", "dir")) and select(_e(b"project/data/table.csv"))
    assert not select(_e(b"project2/x")) and not select(_e(b"projec"))
    assert not select(_e(b".", "dir"))
    assert exact_matcher([b"caf\xe9"])(_e(b"caf\xe9"))  # names need not be UTF-8
    for bad in ("", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/."):
        with pytest.raises(ValueError):
            exact_matcher([bad])
    with pytest.raises(ValueError):
        exact_matcher([])


def test_kept_name_keeps_the_suffix() -> None:
    assert kept_name("thesis.ipynb", "20261201T020000Z") == "thesis.jdr-20261201T020000Z.ipynb"
    assert kept_name("thesis.ipynb", "S", 2) == "thesis.jdr-S-2.ipynb"
    assert kept_name("Makefile", "S") == "Makefile.jdr-S"
    assert kept_name(".bashrc", "S") == ".bashrc.jdr-S"
    assert kept_name("a.tar.gz", "S") == "a.tar.jdr-S.gz"


def test_preview_escapes_everything() -> None:
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["<img src=x onerror=alert(1)>"]},
        {"cell_type": "code", "execution_count": 3, "source": "print(1)", "outputs": [
            {"output_type": "execute_result", "data": {"text/html": "<script>alert(2)</script>",
                                                       "text/plain": "<Figure>", "image/png": "AAAA"}},
            {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["\x1b[31m<b>tb</b>\x1b[0m"]},
        ]},
    ]}
    html = render("a.ipynb", json.dumps(nb).encode())
    assert "<img" not in html and "<script" not in html and "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;Figure&gt;" in html
    assert "image/png, text/html output not shown" in html and "In [3]" in html and "\x1b" not in html
    assert render("x.txt", b"<a href='javascript:x'>") == "<pre class=\"text\">&lt;a href=&#x27;javascript:x&#x27;&gt;</pre>"
    assert "not text" in render("x.txt", b"\0\1\2")
    assert "&lt;" in render("broken.ipynb", b"{<not json")  # a broken notebook is shown as text
    assert previewable("notes/README", 10) and previewable("a.ipynb", 10)
    assert not previewable("a.png", 10) and not previewable("a.txt", 10**9)


def test_zip_is_streamed_in_bounded_chunks() -> None:
    chunks: list[bytes] = []
    big = bytes(range(256)) * 4096 * 8  # 8 MiB, in 1 MiB pieces

    def content(n: int) -> object:
        return iter(big[i:i + (1 << 20)] for i in range(0, n, 1 << 20))

    count = write_zip(iter([("f/a.bin", 1.7e9, content(len(big))), ("f/b.txt", 0.0, iter([b"hi"]))]),
                      chunks.append)
    assert count == 2
    assert max(len(c) for c in chunks) <= (1 << 20) + 4096  # never the whole member at once
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as z:
        assert z.read("f/a.bin") == big and z.read("f/b.txt") == b"hi"
        assert z.getinfo("f/b.txt").date_time[0] == 1980  # clamped: zip has no earlier dates


def test_rate_limiter_and_restore_gate() -> None:
    now = [1000.0]
    rl = RateLimiter(2, clock=lambda: now[0])
    assert rl.take("a") == 0 and rl.take("a") == 0
    assert rl.take("a") == pytest.approx(3600)
    assert rl.take("b") == 0  # per user
    now[0] += 3600
    assert rl.take("a") == 0
    assert RateLimiter(0).take("a") == 0  # 0: unlimited
    gate = RestoreGate()
    assert gate.enter("alice") and not gate.enter("alice") and gate.enter("bob")
    gate.leave("alice")
    assert gate.enter("alice")
