"""Damage records: artifacts found missing, or not matching what their manifests recorded.

They live in the repository itself (docs/FORMAT.md, "Damage records"), so that the next backup of any
machine sees them: one small JSON object per damaged artifact, ``damage/<artifact key>.json``. The key
alone says which artifact is damaged, so a backup learns the whole set with one LIST and reads nothing;
the body says what was found, when, and by what (for people, and for ``jdr verify``).

Who writes them: ``jdr verify`` (shallow and ``--deep``) for every artifact it finds missing, of another
size, with another SHA-256, or (deep) whose content does not match its index; a backup for a reused
artifact it finds missing or of another size; a drill for the artifact of a volume whose restore failed
its checksum. Who reads them: the backup, which never references a
damaged artifact again (it re-reads the volume and uploads a fresh archive). Artifacts are immutable, so
a record stays true until the artifact is gone; ``jdr verify`` removes the record of an artifact it finds
intact again (someone put the original bytes back) and, when it checks every run, the records of
artifacts that no run names any more; prune removes the records of the artifacts it deletes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dr.errors import ObjectNotFound, RepositoryError
from dr.model import Artifact
from dr.repository.store import Store
from dr.util.timefmt import iso, parse_iso

log = logging.getLogger(__name__)

DAMAGE = "damage/"
_SUFFIX = ".json"


def damage_key(artifact_key: str) -> str:
    """Where the damage record of ``artifact_key`` lives."""
    return f"{DAMAGE}{artifact_key}{_SUFFIX}"


def artifact_of_damage_key(key: str) -> str | None:
    """The artifact key a damage record's key names, or None if ``key`` is no damage record."""
    if key.startswith(DAMAGE) and key.endswith(_SUFFIX) and len(key) > len(DAMAGE) + len(_SUFFIX):
        return key[len(DAMAGE):-len(_SUFFIX)]
    return None


@dataclass(frozen=True)
class DamageRecord:
    """What was found wrong with one artifact."""

    key: str  # the artifact's key
    size: int  # recorded size (as the manifest names it)
    sha256: str  # recorded SHA-256
    problem: str  # what was found: "missing", "has 10 bytes, expected 12", "does not match its SHA-256" …
    found: datetime
    found_by: str  # "verify", "verify --deep", "backup"
    run: str = ""  # the run whose manifest named the artifact when it was found
    label: str = ""  # what it holds: "alice", "alice index", "hub database"

    def to_dict(self) -> dict[str, Any]:
        return {"format": "jdr-damage", "version": 1, "key": self.key, "size": self.size,
                "sha256": self.sha256, "problem": self.problem, "found": iso(self.found),
                "found_by": self.found_by, "run": self.run, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DamageRecord:
        return cls(key=str(d["key"]), size=int(d.get("size", 0)), sha256=str(d.get("sha256", "")),
                   problem=str(d.get("problem", "")), found=parse_iso(str(d["found"])),
                   found_by=str(d.get("found_by", "")), run=str(d.get("run", "")),
                   label=str(d.get("label", "")))


def record_damage(store: Store, artifact: Artifact, problem: str, *, found_by: str, found: datetime,
                  run: str = "", label: str = "") -> DamageRecord:
    """Write (or overwrite) the damage record of ``artifact``; returns it."""
    rec = DamageRecord(key=artifact.key, size=artifact.size, sha256=artifact.sha256, problem=problem,
                       found=found, found_by=found_by, run=run, label=label)
    store.put(damage_key(artifact.key), json.dumps(rec.to_dict(), indent=1).encode())
    log.warning("recorded damaged artifact %s (%s): %s", artifact.key, label or run, problem)
    return rec


def damaged_keys(store: Store) -> frozenset[str]:
    """Keys of every artifact recorded damaged: one LIST, nothing read."""
    return frozenset(k for o in store.list(DAMAGE) if (k := artifact_of_damage_key(o.key)))


def load_damage(store: Store) -> list[DamageRecord]:
    """Every damage record (unreadable ones are skipped with a warning), in key order."""
    found = []
    for obj in store.list(DAMAGE):
        if artifact_of_damage_key(obj.key) is None:
            continue
        try:
            found.append(DamageRecord.from_dict(json.loads(store.get(obj.key))))
        except ObjectNotFound:
            continue  # cleared while listing
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable damage record %s: %s", obj.key, e)
    return found


def clear_damage(store: Store, artifact_key: str) -> bool:
    """Remove the damage record of ``artifact_key`` (nothing happens when there is none); False when the
    store refused (the backup role may not delete it: docs/CREDENTIALS.md)."""
    try:
        store.delete(damage_key(artifact_key))
    except RepositoryError as e:
        # A record left behind only makes the next backup re-read one volume: not worth failing for.
        log.warning("could not remove the damage record of %s: %s", artifact_key, e)
        return False
    return True
