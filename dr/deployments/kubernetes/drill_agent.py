"""What a drill's verification mover runs (``jdr agent verify-volume``): check a restored volume against
the run's file index, from a fresh pod that mounts the scratch PVC read-only.

The restore mover already checked each file's size and SHA-256 while it extracted the archive; this second
pass reads the volume back *after* the restore mover is gone, from another pod, as a user's server would
find it: every regular file the index lists must be on the volume with its size and SHA-256, symlinks
must point where they pointed, directories must exist, and nothing the index does not list may be there.
It then counts the files and checks a sample of notebooks with
:func:`dr.deployments.drill.check_tree` (the same check the local drill uses).

No Kubernetes API access: the index comes from the repository (``JDR_…`` settings, as every mover).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dr.archive.index import load_index
from dr.deployments.drill import check_tree, index_file_count
from dr.deployments.kubernetes.ownership import check_readable, identity
from dr.deployments.volume_swap import RESTORE_DIR
from dr.errors import UsageError
from dr.model import IndexEntry, VolumeItem
from dr.repository.artifacts import drain
from dr.repository.repository import Repository

PROBLEM_LIMIT = 20  # problems reported one by one; the rest are counted


def _sha256(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _name(rel: bytes) -> str:
    return os.fsdecode(rel)


def compare_with_index(root: Path, index: Mapping[bytes, IndexEntry]) -> tuple[int, int, list[str]]:
    """(files checked, bytes read, problems): every index entry against the tree at ``root``, and every
    entry of the tree against the index. Symlinks are never followed."""
    base = os.fsencode(root)
    problems: list[str] = []
    files = 0
    read = 0
    for rel, entry in sorted(index.items()):
        if rel in (b".", b""):
            continue
        full = os.path.join(base, rel)
        try:
            st = os.lstat(full)
        except OSError:
            problems.append(f"{_name(rel)}: missing (the index lists a {entry.type})")
            continue
        if entry.type in ("file", "hardlink"):
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{_name(rel)}: not a regular file")
                continue
            expected = entry
            if entry.type == "hardlink":
                target = index.get(entry.link)
                if target is None or target.type != "file":
                    continue  # the link's content is checked through the entry it shares content with
                expected = target
            files += 1
            if st.st_size != expected.size:
                problems.append(f"{_name(rel)}: {st.st_size} bytes, the index says {expected.size}")
                continue
            if expected.sha256:
                try:
                    actual = _sha256(full)
                except OSError as e:
                    problems.append(f"{_name(rel)}: cannot be read ({e.strerror or e})")
                    continue
                read += st.st_size
                if actual != expected.sha256:
                    problems.append(f"{_name(rel)}: SHA-256 {actual[:16]}…, the index says {expected.sha256[:16]}…")
        elif entry.type == "symlink":
            if not stat.S_ISLNK(st.st_mode):
                problems.append(f"{_name(rel)}: not a symlink")
            elif os.readlink(full) != entry.link:
                problems.append(f"{_name(rel)}: points to {_name(os.readlink(full))!r}, the index says "
                                f"{_name(entry.link)!r}")
        elif entry.type == "dir" and not stat.S_ISDIR(st.st_mode):
            problems.append(f"{_name(rel)}: not a directory")
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        if rel_dir == b".":
            dirnames[:] = [d for d in dirnames if d != os.fsencode(RESTORE_DIR)]
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == b"." else os.path.join(rel_dir, name)
            if rel not in index:
                problems.append(f"{_name(rel)}: on the volume, not in the index")
    return files, read, problems


def verify_volume(repo: Repository, item: VolumeItem, *, root: Path, notebooks: int) -> dict[str, Any]:
    """The ``verify-volume`` task: the result is a :class:`dr.deployments.drill.VolumeCheck` as a dict, plus
    what was compared (``checked_files``, ``checked_bytes``, ``index_files``)."""
    if item.index is None:
        raise UsageError(f"{item.label}: the run holds no file index of this volume")
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (is the volume mounted?)")
    verdict = check_readable(root, *identity())
    if not verdict.ok:
        return verdict.to_result()
    with repo.open_artifact(item.index) as raw:
        index = load_index(raw)
        drain(raw)
    checked, read, problems = compare_with_index(root, index)
    tree = check_tree(root, notebooks)
    problems += list(tree.problems)
    more = len(problems) - PROBLEM_LIMIT
    if more > 0:
        problems = [*problems[:PROBLEM_LIMIT], f"… and {more} more problems"]
    return {"status": "ok", "files_on_disk": tree.files_on_disk, "notebooks_checked": tree.notebooks_checked,
            "notebooks_total": tree.notebooks_total, "validator": tree.validator, "problems": problems,
            "checked_files": checked, "checked_bytes": read, "index_files": index_file_count(index)}
