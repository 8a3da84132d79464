"""Seekable archives through a real repository (file:// and SeaweedFS S3, plain and age-encrypted):
a ``--path`` restore reads the index and then only the frames it needs; a corrupt frame fails only the
entries in it, naming the artifact, and ``verify`` still finds it."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

from dr.archive import frames
from dr.archive.index import load_index
from dr.archive.reader import extract_archive
from dr.crypto.age import generate_identity
from dr.crypto.keyring import Keyring
from dr.deployments.volume_backup import backup_tree
from dr.deployments.volume_read import open_for_restore
from dr.errors import IntegrityError
from dr.repository.artifacts import drain
from dr.repository.file import FileStore
from dr.repository.repository import Repository
from dr.repository.s3 import S3Store
from dr.repository.store import Store

RUN = "20261202T000000Z-seek00"


@pytest.fixture(params=["plain", "age"])
def repo(request: pytest.FixtureRequest, store: Store) -> Repository:
    keys = Keyring([generate_identity()]) if request.param == "age" else None
    return Repository.open(store, keys, create=True)


def _home(root: Path) -> Path:
    rng = random.Random(3)
    home = root / "home"
    (home / "nb").mkdir(parents=True)
    for i in range(40):
        (home / "nb" / f"f{i:02}.ipynb").write_bytes(rng.randbytes(20_000))
    (home / "big.bin").write_bytes(rng.randbytes(400_000))
    return home


def _restore(repo: Repository, tree: object, dest: Path, paths: tuple[str, ...]) -> list[int]:
    """Restore ``paths`` into ``dest`` as a volume restore does; return the lengths of the ranged reads."""
    reads: list[int] = []
    plain_read = repo.store.read_range

    def counted(key: str, start: int, length: int) -> bytes:
        reads.append(length)
        return plain_read(key, start, length)

    repo.store.read_range = counted  # type: ignore[method-assign]
    try:
        with repo.open_artifact(tree.index) as raw:  # type: ignore[attr-defined]
            index = load_index(raw)
            drain(raw)
        dest.mkdir()
        with open_for_restore(repo, tree.archive, index, paths) as src:  # type: ignore[attr-defined]
            assert not src.whole
            extract_archive(src.stream, dest, select=lambda e: any(e.name == p for p in paths), index=index,
                            compressed=src.compressed)
    finally:
        del repo.store.read_range
    return reads


def test_path_restore_reads_only_its_frames_and_a_corrupt_frame_fails_only_its_entries(
        repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "FRAME_SIZE", 128 * 1024)
    home = _home(tmp_path)
    tree = backup_tree(home, repo, RUN, "alice", threads=2)
    assert tree.archive is not None and tree.index is not None
    reads = _restore(repo, tree, tmp_path / "one", ("nb/f20.ipynb",))
    assert (tmp_path / "one" / "nb" / "f20.ipynb").read_bytes() == (home / "nb" / "f20.ipynb").read_bytes()
    assert sum(reads) < tree.archive.size / 4, reads  # the header of an encrypted one, then one run
    assert len(reads) <= 2

    # Flip one byte in the frame of f05 (behind the store's back).
    with repo.open_artifact(tree.index) as raw:
        index = load_index(raw)
        drain(raw)
    frame = index[b"nb/f39.ipynb"].frame
    assert index[b"big.bin"].frame != frame
    key = tree.archive.key
    data = bytearray(repo.store.get(key))
    at = frame + 300
    if repo.encrypted:
        # plaintext offset -> its 64 KiB chunk in the ciphertext (docs/FORMAT.md, "Seekable archive")
        header = data.index(b"\n", data.index(b"\n---") + 1) + 1 + 16
        chunk = (frame + 300) // 65536
        at = header + chunk * (65536 + 16) + (frame + 300) % 65536
    data[at] ^= 0x10
    if isinstance(repo.store, S3Store):
        repo.store.put(key, bytes(data))
    else:
        (Path(repo.store.root) / key).write_bytes(bytes(data))  # type: ignore[attr-defined]
    _restore(repo, tree, tmp_path / "two", ("big.bin",))
    assert (tmp_path / "two" / "big.bin").read_bytes() == (home / "big.bin").read_bytes()
    with pytest.raises(IntegrityError, match=key.rsplit("/", 1)[-1]) as err:
        _restore(repo, tree, tmp_path / "three", ("nb/f39.ipynb",))
    assert err.value.exit_code == IntegrityError("x").exit_code
    with pytest.raises(IntegrityError):
        repo.verify_artifact(tree.archive)
    assert os.listdir(tmp_path / "three") in ([], ["nb"])  # extraction stopped at the damage


def test_archive_without_frame_offsets_is_read_whole(tmp_path: Path) -> None:
    """An index written before frames were recorded (no ``frame`` fields): the restore streams the whole
    archive and checks its SHA-256, as before."""
    repo = Repository.open(FileStore(tmp_path / "repo"), create=True)
    home = _home(tmp_path)
    tree = backup_tree(home, repo, RUN, "alice", threads=0)
    assert tree.archive is not None and tree.index is not None
    with repo.open_artifact(tree.index) as raw:
        old = {p: dataclasses.replace(e, frame=-1, frame_offset=-1) for p, e in load_index(raw).items()}
        drain(raw)
    dest = tmp_path / "out"
    dest.mkdir()
    with open_for_restore(repo, tree.archive, old, ("nb/f07.ipynb",)) as src:
        assert src.whole and src.compressed
        extract_archive(src.stream, dest, select=lambda e: e.name == "nb/f07.ipynb", index=old)
        drain(src.stream)
    assert (dest / "nb" / "f07.ipynb").read_bytes() == (home / "nb" / "f07.ipynb").read_bytes()
