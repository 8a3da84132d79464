"""Hostile and corrupt archives are refused with an error naming the problem; nothing lands outside dest.

Each hostile archive is crafted with :mod:`tarfile` directly (the way an attacker would), compressed with
zstd, and extracted into ``dest``; a sentinel directory beside ``dest`` and ``/etc/passwd`` must come out
of it unchanged.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from dr.archive.index import load_index
from dr.archive.reader import extract_archive, verify_archive
from dr.archive.writer import write_archive
from dr.errors import DeploymentError, HostileArchiveError, IntegrityError
from tests.treeutil import file_sha256, snapshot_tree

pytestmark = pytest.mark.faults

Member = tuple[tarfile.TarInfo, bytes | None]


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def tar_bytes(*members: Member) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


@dataclass
class Place:
    root: Path
    dest: Path
    sentinel: Path

    def extract(self, archive: bytes, **kw: object) -> None:
        extract_archive(io.BytesIO(archive), self.dest, **kw)  # type: ignore[arg-type]


@pytest.fixture
def place(tmp_path: Path) -> Place:
    dest, sentinel = tmp_path / "dest", tmp_path / "sentinel"
    dest.mkdir()
    sentinel.mkdir()
    (sentinel / "keep").write_text("original")
    return Place(tmp_path, dest, sentinel)


@pytest.fixture(autouse=True)
def nothing_outside(place: Place) -> object:
    """After each test: the sentinel, the directory around dest, and /etc/passwd are untouched."""
    before = snapshot_tree(place.sentinel), sorted(os.listdir(place.root)), file_sha256(Path("/etc/passwd"))
    yield
    after = snapshot_tree(place.sentinel), sorted(os.listdir(place.root)), file_sha256(Path("/etc/passwd"))
    assert after == before


# Each case: the archive's members (given the sentinel's path) and the error text. Symlink *targets* are
# data (issue #9 item 7: absolute, escaping and dangling targets are recreated exactly); what stays refused
# is writing *through* a link, absolute and '..' member names, hard links out of the target, devices.
Case = tuple[Callable[[Path], list[Member]], str]

REFUSED_BEFORE_ANY_WRITE: dict[str, Case] = {
    "absolute path": (lambda s: [member(f"{s}/evil", data=b"x")], "{s}/evil': absolute path"),
    "dot-dot": (lambda s: [member("../sentinel/evil", data=b"x")], "'../sentinel/evil': '..' component"),
    "dot-dot inside": (lambda s: [member("a/../../sentinel/evil", data=b"x")],
                       "'a/../../sentinel/evil': '..' component"),
    "hard link to /etc/passwd": (lambda s: [member("h", tarfile.LNKTYPE, link="/etc/passwd")],
                                 "'/etc/passwd': absolute path"),
    "hard link outside": (lambda s: [member("h", tarfile.LNKTYPE, link="../sentinel/keep")],
                          "'../sentinel/keep': '..' component"),
    "hard link to a later entry": (
        lambda s: [member("h", tarfile.LNKTYPE, link="later"), member("later", data=b"x")],
        "hard link 'h' -> 'later': target is not an earlier regular file"),
    "character device": (lambda s: [member("tty", tarfile.CHRTYPE)], "'tty': character device not allowed"),
    "block device": (lambda s: [member("sda", tarfile.BLKTYPE)], "'sda': block device not allowed"),
    "fifo": (lambda s: [member("pipe", tarfile.FIFOTYPE)], "'pipe': FIFO not allowed"),
    "contiguous file": (lambda s: [member("c", tarfile.CONTTYPE)], "'c': contiguous file not allowed"),
    "root as a file": (lambda s: [member("./", data=b"x")], "names the root but is not a directory"),
}

REFUSED_AFTER_EARLIER_MEMBERS: dict[str, Case] = {
    "external symlink, then a file through it": (
        lambda s: [member("link", tarfile.SYMTYPE, link=str(s)), member("link/evil", data=b"pwned")],
        "entry 'link/evil': parent 'link' is a symlink"),
    "relative escaping symlink, then a file through it": (
        lambda s: [member("up", tarfile.SYMTYPE, link="../sentinel"), member("up/keep", data=b"pwned")],
        "entry 'up/keep': parent 'up' is a symlink"),
    "symlink to /etc, then link/passwd": (
        lambda s: [member("link", tarfile.SYMTYPE, link="/etc"), member("link/passwd", data=b"pwned")],
        "entry 'link/passwd': parent 'link' is a symlink"),
    "nested escaping symlink, then through it": (
        lambda s: [member("a/b/l", tarfile.SYMTYPE, link="../../../sentinel"), member("a/b/l/keep", data=b"x")],
        "entry 'a/b/l/keep': parent 'a/b/l' is a symlink"),
    "hard link through a symlink": (
        lambda s: [member("s", tarfile.SYMTYPE, link=str(s)), member("h", tarfile.LNKTYPE, link="s/keep")],
        "hard link 'h' -> 's/keep': parent 's' is a symlink"),
    "symlink to a directory, then a directory through it": (
        lambda s: [member("d", tarfile.SYMTYPE, link=str(s)), member("d/sub", tarfile.DIRTYPE)],
        "entry 'd/sub': parent 'd' is a symlink"),
    "hard link to a directory": (
        lambda s: [member("d", tarfile.DIRTYPE), member("h", tarfile.LNKTYPE, link="d")],
        "hard link 'h' -> 'd': target is not an earlier regular file"),
    "file over a directory": (lambda s: [member("d", tarfile.DIRTYPE), member("d", data=b"x")],
                              "entry 'd' would overwrite a directory"),
    "symlink over a directory": (
        lambda s: [member("d", tarfile.DIRTYPE), member("d", tarfile.SYMTYPE, link=str(s))],
        "entry 'd' would overwrite a directory"),
    "directory over a file": (lambda s: [member("f", data=b"x"), member("f", tarfile.DIRTYPE)],
                              "directory 'f' would replace an earlier entry"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BEFORE_ANY_WRITE))
def test_hostile_member_is_refused_before_anything_is_written(place: Place, case: str) -> None:
    members, message = REFUSED_BEFORE_ANY_WRITE[case]
    archive = zst(tar_bytes(*members(place.sentinel)))
    with pytest.raises(HostileArchiveError, match=re.escape(message.format(s=place.sentinel))):
        place.extract(archive)
    assert os.listdir(place.dest) == []


@pytest.mark.parametrize("case", sorted(REFUSED_AFTER_EARLIER_MEMBERS))
def test_hostile_member_after_others_is_refused_and_nothing_escapes(place: Place, case: str) -> None:
    members, message = REFUSED_AFTER_EARLIER_MEMBERS[case]
    archive = zst(tar_bytes(*members(place.sentinel)))
    with pytest.raises(HostileArchiveError, match=re.escape(message)):
        place.extract(archive)


def test_repeated_name_replaces_a_symlink_instead_of_writing_through_it(place: Place) -> None:
    archive = zst(tar_bytes(member("x", tarfile.SYMTYPE, link=str(place.sentinel / "keep")),
                            member("x", data=b"pwned")))
    place.extract(archive)
    assert not os.path.islink(place.dest / "x") and (place.dest / "x").read_bytes() == b"pwned"


def test_symlinks_are_data_whatever_their_target(place: Place) -> None:
    """Absolute, escaping and dangling targets are recreated exactly, never followed (the old refusal of
    'absolute target' / 'points outside' is gone: such homes are ordinary)."""
    links = {"shared": "/srv/shared-data", "d/up": "../../elsewhere", "etc": "/etc", "passwd": "/etc/passwd",
             "sentinel": str(place.sentinel), "dangling": "/proc/999999999/nothing", "self": "self"}
    archive = zst(tar_bytes(member("d", tarfile.DIRTYPE),
                            *(member(k, tarfile.SYMTYPE, link=v) for k, v in links.items())))
    place.extract(archive)
    for name, target in links.items():
        assert os.readlink(place.dest / name) == target, name


def test_empty_or_nul_symlink_targets_are_refused(place: Place) -> None:
    with pytest.raises(HostileArchiveError, match="empty or NUL in target"):
        place.extract(zst(tar_bytes(member("l", tarfile.SYMTYPE, link=""))))


def test_verify_reports_hostile_members_without_raising(place: Place) -> None:
    archive = zst(tar_bytes(member("../evil", data=b"x"), member("tty", tarfile.CHRTYPE)))
    report = verify_archive(io.BytesIO(archive), {})
    assert not report.ok
    assert [p.split(": ", 1)[1] for p in report.problems] == ["entry '../evil': '..' component",
                                                             "entry 'tty': character device not allowed in "
                                                             "a volume archive"]


# --- corrupt archives -------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A valid archive (compressed) and its tar stream."""
    home = tmp_path_factory.mktemp("home")
    (home / "d").mkdir()
    (home / "d" / "random.bin").write_bytes(os.urandom(1 << 20))
    (home / "small.txt").write_text("small")
    out, index = io.BytesIO(), io.BytesIO()
    write_archive(home, out, index)
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue())).read()
    return out.getvalue(), tar


@pytest.mark.parametrize("cut", [0.5, 0.9, -4, -1])
def test_truncated_archive_is_an_integrity_error(place: Place, good: tuple[bytes, bytes], cut: float) -> None:
    archive = good[0]
    end = int(len(archive) * cut) if cut > 0 else len(archive) + int(cut)
    with pytest.raises(IntegrityError, match="truncated") as caught:
        place.extract(archive[:end])
    assert not isinstance(caught.value, HostileArchiveError)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_flipped_byte_is_an_integrity_error(place: Place, good: tuple[bytes, bytes], where: float) -> None:
    archive = bytearray(good[0])
    archive[int(len(archive) * where)] ^= 0x20
    with pytest.raises(IntegrityError, match=r"archive is (corrupt|not zstd)"):
        place.extract(bytes(archive))


def test_damaged_tar_header_mid_archive_is_not_mistaken_for_the_end(place: Place,
                                                                   good: tuple[bytes, bytes]) -> None:
    tar = bytearray(good[1])
    # The last member header (small.txt) sits after the 1 MiB file: break its checksum field.
    offset = tar.rindex(b"small.txt\0") // 512 * 512
    tar[offset + 148:offset + 156] = b"0000000\0"
    with pytest.raises(IntegrityError, match="damaged tar header"):
        place.extract(zst(bytes(tar)))


def test_tar_without_end_marker_is_truncated(place: Place, good: tuple[bytes, bytes]) -> None:
    tar = good[1]
    end = tar.rindex(b"small.txt\0") // 512 * 512 + 1024  # header and one data block of small.txt
    with pytest.raises(IntegrityError, match="without an end-of-archive marker"):
        place.extract(zst(tar[:end]))


def test_member_hidden_after_the_end_marker_is_refused(place: Place, good: tuple[bytes, bytes]) -> None:
    hidden = tar_bytes(member("hidden", data=b"smuggled"))
    with pytest.raises(IntegrityError, match="data after its end-of-archive marker"):
        place.extract(zst(good[1] + hidden))


@pytest.mark.parametrize(("blob", "message"), [
    (b"", "archive is empty"),
    (b"plain text, not zstd", "not zstd data"),
    (tar_bytes(member("a", data=b"x")), "not zstd data"),
    (zst(b"not a tar at all" * 100), "not a valid tar stream"),
])
def test_garbage_is_an_integrity_error(place: Place, blob: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        place.extract(blob)


def test_index_garbage_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="not a jdr index"):
        load_index(io.BytesIO(zst(b'{"format": "something-else"}\n')))
    with pytest.raises(IntegrityError, match="index line 2 is not JSON"):
        load_index(io.BytesIO(zst(b'{"format": "jdr-index", "version": 1}\n{oops\n')))
    with pytest.raises(IntegrityError, match="index is truncated"):
        load_index(io.BytesIO(zst(b'{"format": "jdr-index", "version": 1}\n' * 100)[:-5]))
    with pytest.raises(IntegrityError, match="version 2 is not supported"):
        load_index(io.BytesIO(zst(b'{"format": "jdr-index", "version": 2}\n')))


# --- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A real 2 MiB tmpfs (the tests run as root), unmounted afterwards."""
    mountpoint = tmp_path_factory.mktemp("small-disk")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_disk_full_is_a_deployment_error_naming_the_file(small_disk: Path,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("big-home")
    (home / "big.bin").write_bytes(os.urandom(5 << 20))
    out = io.BytesIO()
    write_archive(home, out, io.BytesIO())
    with pytest.raises(DeploymentError, match=re.escape(f"no space left on the device while writing "
                                                        f"{small_disk}/big.bin")) as caught:
        extract_archive(io.BytesIO(out.getvalue()), small_disk)
    assert caught.value.hint and "free space" in caught.value.hint
