"""Hostile and corrupt archives through ``jdr restore --user``, on file:// and the real S3 server.

Each archive is crafted (tarfile + zstd, as an attacker would) and put into the repository under a run
whose manifest records its true size and SHA-256, so only the content is hostile (except for the flipped
byte, whose manifest keeps the original checksum). The restore must refuse with an error naming the
problem, and write nothing inside the home (no restore state left over) or outside it. Symlink targets
are data (issue #9 item 7): an archive holding a link out of the home restores it as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from dr.archive.index import IndexWriter
from dr.model import IndexEntry, Manifest, new_run_id
from dr.repository import layout
from dr.repository.repository import Repository
from dr.util.timefmt import utcnow
from tests.fixtures.sandbox import Sandbox, describe
from tests.restoreutil import state_dirs
from tests.treeutil import snapshot_tree, tree_diff

pytestmark = pytest.mark.faults

Member = tuple[tarfile.TarInfo, bytes | None]
T = 1_700_000_000


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid, info.gid, info.mtime = 1000, 100, T
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def archive_of(*members: Member) -> tuple[bytes, bytes]:
    """(zstd tar, zstd index) of ``members``, the index listing each member as the archive does."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    index = io.BytesIO()
    w = IndexWriter(index, root="/crafted", created=datetime.now().astimezone())
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink"}
    for info, data in members:
        path = info.name.strip("/").removeprefix("./") or "."
        w.add(IndexEntry(path=path.encode(), type=kinds.get(info.type, "file"),  # type: ignore[arg-type]
                         size=info.size, mode=info.mode, uid=1000, gid=100, mtime=float(T),
                         sha256=hashlib.sha256(data).hexdigest() if data is not None else "",
                         link=info.linkname.encode()))
    w.close()
    return zstandard.ZstdCompressor(write_checksum=True).compress(raw.getvalue()), index.getvalue()


def put_run(repo: Repository, base: Manifest, user: str, archive: bytes, index: bytes,
            archive_sha: str | None = None) -> str:
    """Commit a run like ``base`` whose item for ``user`` is ``archive`` (recorded with its true size and
    SHA-256, or ``archive_sha``) and ``index``."""
    run = new_run_id(utcnow())
    item = base.volume_for(user)
    assert item is not None
    with repo.artifact_writer(layout.volume_archive_key(run, item.key, False), run) as aw:
        aw.write(archive)
    with repo.artifact_writer(layout.volume_index_key(run, item.key, False), run) as iw:
        iw.write(index)
    arch = aw.artifact if archive_sha is None else dataclasses.replace(aw.artifact, sha256=archive_sha)
    vols = tuple(dataclasses.replace(v, archive=arch, index=iw.artifact, reused_from=None)
                 if v.user == user else v for v in base.volumes)
    repo.commit_manifest(dataclasses.replace(base, run=run, started=utcnow(), finished=utcnow(),
                                             volumes=vols))
    return run


def watched(sb: Sandbox) -> dict[bytes, dict[str, Any]]:
    """Every home and the directory beside them, entry by entry."""
    homes = snapshot_tree(Path(sb.homes).parent)
    outside = {b"outside/" + k: v for k, v in snapshot_tree(sb.root / "outside").items()}
    return {**homes, **outside}


def test_hostile_and_corrupt_archives_are_refused_and_nothing_is_written(sandbox: Sandbox) -> None:
    sb = sandbox
    outside = sb.root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("must not change\n")
    first = sb.jdr_json("backup")["manifest"]
    repo = sb.repo()
    base = repo.load_manifest(first["run"])
    bob = base.volume_for("bob")
    assert bob is not None and bob.archive is not None and bob.index is not None
    real_archive = repo.store.get(bob.archive.key)
    real_index = repo.store.get(bob.index.key)
    root = member(".", tarfile.DIRTYPE)
    ok = member("notes.txt", data=b"fine\n")

    flipped = bytearray(real_archive)
    flipped[len(flipped) // 2] ^= 0x01
    cases: dict[str, tuple[bytes, bytes, str | None, str]] = {
        "absolute path": (*archive_of(root, ok, member(str(outside / "pwned"), data=b"x")), None,
                          "absolute path"),
        "dot-dot": (*archive_of(root, ok, member("../../outside/pwned", data=b"x")), None, "'..' component"),
        "symlink out, then a file through it": (
            *archive_of(root, member("evil", tarfile.SYMTYPE, link=str(outside)),
                        member("evil/pwned", data=b"x")), None, "'evil' is a symlink"),
        "symlink inside, then a file through it": (
            *archive_of(root, member("sub", tarfile.DIRTYPE), member("link", tarfile.SYMTYPE, link="sub"),
                        member("link/pwned", data=b"x")), None, "is a symlink"),
        "device node": (*archive_of(root, ok, member("dev-null", tarfile.CHRTYPE)), None, "character device"),
        "truncated archive": (real_archive[: len(real_archive) // 2], real_index, None, ""),
        "flipped byte": (bytes(flipped), real_index, hashlib.sha256(real_archive).hexdigest(), ""),
    }
    for name, (archive, index, sha, expected) in cases.items():
        run = put_run(repo, base, "bob", archive, index, sha)
        before = watched(sb)
        proc = sb.run_jdr("--json", "restore", "--user", "bob", "--run", run, "--yes")
        assert proc.returncode == 3, f"{name}: {describe(proc)}"
        doc = json.loads(proc.stdout)
        (item,) = doc["items"]
        assert item["status"] == "failed", name
        error = item["error"]
        assert expected.lower() in error.lower(), f"{name}: {error}"
        if name in ("truncated archive", "flipped byte"):
            assert any(w in error.lower() for w in ("truncated", "corrupt", "sha-256", "zstd", "checksum")), \
                f"{name}: {error}"
        assert error in proc.stderr  # also said on the terminal
        after = watched(sb)
        assert after == before, f"{name}:\n" + "\n".join(tree_diff(before, after)[:20])
        assert state_dirs(sb.home("bob")) == [], name
        assert not os.path.lexists(outside / "pwned") and not os.path.lexists(sb.root / "pwned"), name

    # A link out of the home, alone, is data: restored exactly, never followed (the option that used to
    # allow it, --allow-external-links, is gone).
    run = put_run(repo, base, "bob", *archive_of(root, ok, member("evil", tarfile.SYMTYPE, link=str(outside))))
    before = watched(sb)
    doc = sb.jdr_json("restore", "--user", "bob", "--run", run, "--yes", "--discard-previous")
    assert doc["status"] == "done"
    assert os.readlink(sb.home("bob") / "evil") == str(outside)
    assert {k: v for k, v in watched(sb).items() if k.startswith(b"outside/")} == \
        {k: v for k, v in before.items() if k.startswith(b"outside/")}
    assert not os.path.lexists(outside / "pwned")
    gone = sb.run_jdr("restore", "--user", "bob", "--run", run, "--yes", "--allow-external-links")
    assert gone.returncode == 2 and "allow-external-links" in gone.stderr
