"""Pure parts of ``jdr serve`` and of its restore contract: exact path selection, kept names, the
escaping preview renderer, the streamed zip, the limits."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import zipfile
from collections.abc import Iterator

import pytest

from dr.archive.globs import exact_matcher
from dr.deployments.self_restore import kept_name
from dr.errors import IntegrityError
from dr.model import IndexEntry
from dr.serve.limits import RateLimiter, RestoreGate
from dr.serve.preview import previewable, render
from dr.serve.zipstream import Member, ZipPlan


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


def test_zip_is_streamed_in_bounded_chunks_and_exactly_as_long_as_planned() -> None:
    chunks: list[bytes] = []
    big = bytes(range(256)) * 4096 * 8  # 8 MiB, in 1 MiB pieces

    def content(n: int) -> object:
        return iter(big[i:i + (1 << 20)] for i in range(0, n, 1 << 20))

    plan = ZipPlan([Member(b"f/", "dir", mtime=1.7e9, mode=0o750),
                    Member(b"f/a.bin", "file", mtime=1.7e9, mode=0o640, size=len(big), key=b"a"),
                    Member(b"f/l\xc3\xa9", "symlink", link=b"../../etc/passwd"),
                    Member(b"f/\xff.txt", "file", size=2, key=b"b")])  # not UTF-8: written as it is
    n = plan.write(iter([(b"a", content(len(big))), (b"b", iter([b"hi"]))]), chunks.append)
    data = b"".join(chunks)
    assert n == len(data) == plan.size
    assert max(len(c) for c in chunks) <= (1 << 20)  # never the whole member at once
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None  # every CRC checks
        assert z.read("f/a.bin") == big and z.getinfo("f/a.bin").compress_type == zipfile.ZIP_STORED
        assert z.getinfo("f/a.bin").external_attr >> 16 == stat.S_IFREG | 0o640
        link = z.getinfo("f/lé")
        assert stat.S_ISLNK(link.external_attr >> 16) and z.read(link) == b"../../etc/passwd"
        assert z.getinfo("f/").is_dir() and z.getinfo("f/").external_attr >> 16 == stat.S_IFDIR | 0o750
        assert z.read(b"f/\xff.txt".decode("cp437")) == b"hi"  # zip's legacy reading of unflagged names
        assert z.getinfo("f/lé").date_time[0] == 1980  # clamped: zip has no earlier dates


def test_zip_refuses_content_that_disagrees_with_the_plan() -> None:
    plan = ZipPlan([Member(b"a", "file", size=3, key=b"a"), Member(b"b", "file", size=1, key=b"b")])
    for contents in ([(b"a", iter([b"abcd"]))], [(b"a", iter([b"ab"]))], [(b"b", iter([b"x"]))],
                     [(b"a", iter([b"abc"]))]):  # longer, shorter, out of order, missing
        with pytest.raises(IntegrityError):
            plan.write(iter(contents), lambda b: None)


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


def test_unzip_restores_the_links_of_a_folder_zip_as_links(tmp_path) -> None:
    """Debian's Info-ZIP ``unzip`` (installed by scripts/setup) reads the zip and makes each link a link
    with the index's target, hostile ones included: they are data, never followed by anyone."""
    plan = ZipPlan([Member(b"p/", "dir", mode=0o755), Member(b"p/a.txt", "file", size=3, key=b"a"),
                    Member(b"p/up", "symlink", link=b"../../etc/passwd"),
                    Member(b"p/abs", "symlink", link=b"/etc/shadow"), Member(b"p/rel", "symlink", link=b"a.txt")])
    out = io.BytesIO()
    plan.write(iter([(b"a", iter([b"abc"]))]), out.write)
    (tmp_path / "p.zip").write_bytes(out.getvalue())
    proc = subprocess.run(["unzip", "-q", str(tmp_path / "p.zip"), "-d", str(tmp_path / "x")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = tmp_path / "x" / "p"
    assert (got / "a.txt").read_bytes() == b"abc"
    assert {n: os.readlink(got / n) for n in ("up", "abs", "rel")} == {
        "up": "../../etc/passwd", "abs": "/etc/shadow", "rel": "a.txt"}
    assert all((got / n).is_symlink() for n in ("up", "abs", "rel"))


def test_a_zip_past_4_gib_uses_zip64_sizes_and_offsets(tmp_path) -> None:
    """A 4 GiB + 1 file, then a small file and a link whose offsets are past 4 GiB: zip64 extra fields
    and end records, read back by zipfile and listed by unzip. The big file's zero bytes are skipped in a
    sparse file (its CRC is still computed by the writer); the small member's bytes are checked."""
    big = (4 << 30) + 1
    zero = bytes(16 << 20)

    def zeros() -> Iterator[bytes]:
        left = big
        while left:
            n = min(left, len(zero))
            yield zero if n == len(zero) else bytes(n)
            left -= n

    plan = ZipPlan([Member(b"d/big", "file", size=big, key=b"big"), Member(b"d/after", "file", size=5, key=b"a"),
                    Member(b"d/l", "symlink", link=b"after")])
    path = tmp_path / "big.zip"
    with path.open("wb") as f:
        def emit(b: bytes) -> None:
            if b is zero:
                f.seek(len(b), os.SEEK_CUR)
            else:
                f.write(b)
        plan.write(iter([(b"big", zeros()), (b"a", iter([b"after"]))]), emit)
        f.truncate()
    assert path.stat().st_size == plan.size and plan.eocd64
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("d/big").file_size == big and z.read("d/after") == b"after"
        assert z.getinfo("d/after").header_offset > 0xFFFFFFFF and z.read("d/l") == b"after"
    listed = subprocess.run(["unzip", "-l", str(path)], capture_output=True, text=True, check=False)
    assert listed.returncode == 0 and str(big) in listed.stdout, listed.stdout + listed.stderr
