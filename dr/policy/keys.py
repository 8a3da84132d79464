"""Which keys open which runs, and which artifacts a backup may reuse under the current recipients (pure).

Every encrypted artifact records the fingerprints of the recipients it was encrypted to; any one of
their keys opens it. A run is restorable with a key when that key opens every encrypted artifact the run
names, including those it reuses from earlier runs: the run's keys are the intersection. For that to hold
for every new run, a backup reuses an earlier artifact only when it is encrypted to *every* current
recipient of the repository; anything else is archived again (after ``jdr key rotate`` or
``jdr key add-recipient``, the next run re-uploads what the old keys alone could open).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from dr.model import Artifact, Manifest, VolumeItem


def is_encrypted(artifact: Artifact) -> bool:
    return artifact.encoding == "age" or artifact.encoding.endswith("+age")


@dataclass(frozen=True)
class RunKeys:
    """The keys a run needs. ``fingerprints``: any one of these keys opens the whole run; meaningful only
    when ``encrypted`` and ``known`` (``known`` is False when an artifact's recipients were not recorded)."""

    run: str
    encrypted: bool
    known: bool
    fingerprints: frozenset[str]

    def opens_with(self, held: Iterable[str]) -> bool | None:
        """Whether one of the ``held`` fingerprints opens the whole run (None: cannot tell)."""
        if not self.encrypted:
            return True
        if not self.known:
            return None
        return bool(self.fingerprints & set(held))


def run_keys(manifest: Manifest, artifacts: Iterable[Artifact] | None = None) -> RunKeys:
    """The keys that open ``artifacts`` (default: every artifact of the run)."""
    encrypted = [a for a in (manifest.artifacts() if artifacts is None else artifacts) if is_encrypted(a)]
    if not encrypted:
        return RunKeys(manifest.run, False, True, frozenset())
    if any(not a.recipients for a in encrypted):
        return RunKeys(manifest.run, True, False, frozenset())
    common = frozenset(encrypted[0].recipients)
    for a in encrypted[1:]:
        common &= frozenset(a.recipients)
    return RunKeys(manifest.run, True, True, common)


def covers(item: VolumeItem, required: frozenset[str]) -> bool:
    """Whether every encrypted artifact of ``item`` is encrypted to all of ``required``."""
    return all(not is_encrypted(a) or required <= frozenset(a.recipients) for a in item.artifacts())


def reusable_previous(previous: Manifest | None,
                      required: Iterable[str]) -> tuple[Manifest | None, list[str]]:
    """``previous`` without the volume items a new run must not reuse, and the labels of those items.

    An item may be reused only when its artifacts are encrypted to every ``required`` fingerprint (the
    repository's current recipients); with no requirement (an unencrypted repository) all stay.
    """
    need = frozenset(required)
    if previous is None or not need:
        return previous, []
    keep = tuple(v for v in previous.volumes if covers(v, need))
    dropped = [v.label for v in previous.volumes if v.status == "ok" and not covers(v, need)]
    return (previous if len(keep) == len(previous.volumes) else replace(previous, volumes=keep)), dropped


@dataclass(frozen=True)
class KeyUsage:
    """For each fingerprint, the runs its key alone restores; and the runs whose keys are unknown."""

    by_key: dict[str, list[str]]
    unknown: list[str]
    unencrypted: list[str]


def key_usage(manifests: Iterable[Manifest]) -> KeyUsage:
    """Which runs each key restores on its own (runs newest first, as given)."""
    by_key: dict[str, list[str]] = {}
    unknown: list[str] = []
    plain: list[str] = []
    for m in manifests:
        keys = run_keys(m)
        if not keys.encrypted:
            plain.append(m.run)
        elif not keys.known:
            unknown.append(m.run)
        else:
            for fp in sorted(keys.fingerprints):
                by_key.setdefault(fp, []).append(m.run)
    return KeyUsage(by_key, unknown, plain)
