"""A local backup of several homes at once starts them largest first by the previous run's sizes, so the
home left to finish alone at the end is a small one (issue 12: idle cores at the end of a run); homes the
previous run does not know (a first backup, a new user) keep their order and go first."""

from __future__ import annotations

from datetime import UTC, datetime

from dr.deployments.base import BackupContext, Volume
from dr.deployments.local import start_order
from dr.model import Manifest, VolumeItem

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _ctx(previous: dict[str, tuple[int, str]] | None) -> BackupContext:
    manifest = None
    if previous is not None:
        items = tuple(VolumeItem(key=u, user=u, bytes=size, status=status)  # type: ignore[arg-type]
                      for u, (size, status) in previous.items())
        manifest = Manifest(run="r1", started=NOW, finished=NOW, status="complete", deployment={}, hub=None,
                            volumes=items)
    return BackupContext(repo=None, run="r2", previous=manifest)  # type: ignore[arg-type]


VOLUMES = [Volume(key=u, user=u) for u in ("ann", "bob", "cy", "dee", "eve")]


def test_first_backup_keeps_the_hub_order() -> None:
    assert start_order(VOLUMES, _ctx(None)) == [0, 1, 2, 3, 4]


def test_known_homes_start_largest_first_after_the_unknown_ones() -> None:
    previous = {"ann": (10, "ok"), "bob": (500, "ok"), "dee": (500, "ok"), "eve": (900, "failed")}
    # cy and eve have no size (not in the previous run; failed there): first, in their order; then bob and
    # dee (equal: in their order), then ann.
    assert start_order(VOLUMES, _ctx(previous)) == [2, 4, 1, 3, 0]
