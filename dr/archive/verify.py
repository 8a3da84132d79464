"""Checking an archive against its index without writing anything (``jdr verify --deep``, drills)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from dr.archive import safety
from dr.archive.tarfmt import member_entry, member_link, member_name
from dr.archive.tarstream import TarStream
from dr.errors import IntegrityError
from dr.model import IndexEntry

_MAX_PROBLEMS = 1000  # a report stays readable; the count of the rest is kept


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_archive`. ``ok`` is True only when ``problems`` is empty."""

    problems: list[str] = field(default_factory=list)
    files: int = 0  # regular file members read
    bytes: int = 0  # bytes of file content read and hashed
    entries: int = 0  # members read
    _dropped: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self._dropped += 1
            self.problems[-1] = f"... and {self._dropped} more problems"


def verify_archive(src: BinaryIO, index: Mapping[bytes, IndexEntry]) -> VerifyReport:
    """Read the whole archive ``src`` (through to EOF) and compare every member with ``index``.

    Checked: the same set of paths; per entry type, size, mode, uid, gid, mtime and link target; the
    SHA-256 of each file's content; and that no member would be refused by extraction (hostile names or
    types, escaping symlinks are reported, not raised). Corrupt or truncated data ends the check with a
    problem. Never raises for what it finds; the report lists every problem, naming the path.
    """
    report = VerifyReport()
    seen: set[bytes] = set()
    try:
        stream = TarStream(src)
        for member in stream:
            report.entries += 1
            try:
                path = safety.clean_path(member_name(member))
                safety.check_type(member, path)
                link = member_link(member)
                if member.issym():
                    safety.check_symlink(path, link)
                elif member.islnk():
                    link = safety.clean_hardlink(path, link)
            except IntegrityError as e:
                report.add(str(e))
                continue
            seen.add(path)
            actual = member_entry(member, path, link)
            if member.isreg():
                digest = hashlib.sha256()
                for chunk in stream.chunks(member):
                    digest.update(chunk)
                    report.bytes += len(chunk)
                report.files += 1
                actual = _with_hash(actual, digest.hexdigest())
            expected = index.get(path)
            if expected is None:
                report.add(f"{actual.name!r}: in the archive but not in the index")
                continue
            for problem in _compare(actual, expected, index):
                report.add(f"{actual.name!r}: {problem}")
    except IntegrityError as e:
        report.add(f"archive unreadable: {e}")
        return report
    for entry in index.values():
        if entry.path not in seen:
            report.add(f"{entry.name!r}: in the index but not in the archive")
    return report


def _with_hash(entry: IndexEntry, sha256: str) -> IndexEntry:
    return IndexEntry(path=entry.path, type=entry.type, size=entry.size, mode=entry.mode, uid=entry.uid,
                      gid=entry.gid, mtime=entry.mtime, sha256=sha256, link=entry.link)


def _compare(actual: IndexEntry, expected: IndexEntry, index: Mapping[bytes, IndexEntry]) -> list[str]:
    problems = []
    if actual.type != expected.type:
        return [f"type {actual.type} in the archive, {expected.type} in the index"]
    for name in ("mode", "uid", "gid", "mtime", "link"):
        a, b = getattr(actual, name), getattr(expected, name)
        if a != b:
            shown = (oct(a), oct(b)) if name == "mode" else (a, b)
            problems.append(f"{name} {shown[0]!r} in the archive, {shown[1]!r} in the index")
    if actual.type == "file":
        if actual.size != expected.size:
            problems.append(f"size {actual.size} in the archive, {expected.size} in the index")
        elif actual.sha256 != expected.sha256:
            problems.append("content differs from the index (sha256)")
    elif actual.type == "hardlink":
        first = index.get(actual.link)  # when missing, that is reported for the first name itself
        if first is not None and (first.size, first.sha256) != (expected.size, expected.sha256):
            problems.append("hard link's content record differs from its target's")
    return problems
