"""Comparing directory trees in tests: a snapshot holds everything a restore must bring back.

``snapshot_tree(a) == snapshot_tree(b)`` means: the same paths (as bytes), and for each the same type,
size, content (SHA-256), permission bits, uid, gid, mtime (nanoseconds), symlink target, and the same
hard-link grouping. Nothing is followed: symlinks are recorded as links.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def file_sha256(path: Path | bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_tree(root: Path, *, root_attrs: bool = True, mtimes: bool = True) -> dict[bytes, dict[str, Any]]:
    """Every entry under ``root`` (and ``root`` itself as ``b"."`` when ``root_attrs``), keyed by its
    relative path in bytes. Each value is a dict: type, mode (``stat.S_IMODE``), uid, gid, mtime_ns (unless
    ``mtimes`` is False; directories included), and per type: size and sha256 for files, target (bytes)
    for symlinks. Files with more than one link get ``linked_with``: the smallest relative path sharing
    their inode, so two trees with the same hard-link structure compare equal.
    """
    base = os.fsencode(root)
    found: dict[bytes, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], bytes] = {}

    def record(full: bytes, rel: bytes) -> None:
        st = os.lstat(full)
        kind = _kind(st.st_mode)
        rec: dict[str, Any] = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                               "gid": st.st_gid}
        if mtimes:
            rec["mtime_ns"] = st.st_mtime_ns
        if kind == "file":
            rec["size"] = st.st_size
            rec["sha256"] = file_sha256(full)
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                inodes[key] = min(inodes.get(key, rel), rel)
                rec["_inode"] = key
        elif kind == "symlink":
            rec["target"] = os.readlink(full)
        found[rel] = rec

    if root_attrs:
        record(base, b".")
    for dirpath, dirnames, filenames in os.walk(base):  # symlinks to directories are not followed
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            record(full, os.path.relpath(full, base))
    for rec in found.values():
        key = rec.pop("_inode", None)
        if key is not None:
            rec["linked_with"] = inodes[key]
    return found


def tree_diff(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]]) -> list[str]:
    """Readable differences between two snapshots (empty when equal), for assertion messages."""
    out = [f"only in first: {p!r}" for p in sorted(a.keys() - b.keys())]
    out += [f"only in second: {p!r}" for p in sorted(b.keys() - a.keys())]
    for p in sorted(a.keys() & b.keys()):
        if a[p] != b[p]:
            keys = sorted(set(a[p]) | set(b[p]))
            out.append(f"{p!r}: " + ", ".join(f"{k}: {a[p].get(k)!r} != {b[p].get(k)!r}"
                                              for k in keys if a[p].get(k) != b[p].get(k)))
    return out


SPARSE_OFFSET = 1 << 30  # where the sample home's sparse file has its data
_BASE_NS = 1_700_000_000_123_456_789  # sub-second mtimes, distinct per entry


def build_sample_home(home: Path, *, uid: int = 1000, gid: int = 100) -> Path:
    """Create (as root) a home directory holding every kind of entry an archive must keep.

    Nested and empty directories; empty, small and 3 MiB random files; symlinks to a file, to a directory
    and dangling; a hard-link pair; modes 0o600, 0o700, setgid and setuid; owner ``uid:gid`` with one file
    owned by another uid; sub-second mtimes on everything; a 200-byte name and a 300-byte path; a
    non-UTF-8 name (``caf\\xe9.txt``); a UTF-8 name (``Émile.ipynb``); a sparse file with 4 KiB of data at
    1 GiB. Returns ``home``.
    """
    home.mkdir(parents=True)
    hb = os.fsencode(home)

    def write(rel: str | bytes, data: bytes, mode: int = 0o644) -> None:
        path = os.path.join(hb, os.fsencode(rel))
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    for d in ("notebooks/sub", "empty", "private", "shared", "data"):
        (home / d).mkdir(parents=True)
    os.chmod(home / "private", 0o700)
    os.chmod(home / "shared", 0o2775)
    write("notebooks/analysis.ipynb", b'{"cells": []}\n')
    write("notebooks/sub/deep.py", b"print('deep')\n")
    write("empty.txt", b"")
    write("data/random.bin", os.urandom(3 << 20))
    write("secret.key", b"key material\n", 0o600)
    write("shared/tool", b"#!/bin/sh\n", 0o4755)
    write("Émile.ipynb", "{\"title\": \"Émile\"}\n".encode())
    write(b"caf\xe9.txt", b"latin-1 name\n")
    write("n" * 200, b"long name\n")
    long_dir = home / ("d" * 150)
    long_dir.mkdir()
    write(os.path.join("d" * 150, "e" * 149), b"long path\n")
    write("hard1", b"shared inode\n")
    os.link(home / "hard1", home / "notebooks" / "hard2")
    os.symlink("notebooks/analysis.ipynb", home / "link-file")
    os.symlink("notebooks", home / "link-dir")
    os.symlink("nowhere/at/all", home / "dangling")
    with open(home / "sparse.img", "wb") as f:
        f.seek(SPARSE_OFFSET)
        f.write(b"\x5a" * 4096)
    write("other-owner.txt", b"not mine\n")

    entries = sorted((os.path.join(d, n) for d, ds, fs in os.walk(hb) for n in ds + fs), reverse=True)
    for i, path in enumerate([*entries, hb]):  # deepest first, so directory mtimes stay as set
        owner = (uid + 1, gid + 1) if path.endswith(b"other-owner.txt") else (uid, gid)
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        os.chown(path, *owner, follow_symlinks=False)
        if not os.path.islink(path):
            os.chmod(path, mode)  # chown cleared setuid/setgid
        os.utime(path, ns=(_BASE_NS + i * 1_000_001, _BASE_NS + i * 1_000_001), follow_symlinks=False)
    return home
