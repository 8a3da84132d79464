"""The season test: 120 days of a local hub in a few minutes, on a file:// repository (on its own small
filesystem) and on real S3 (SeaweedFS, through a fault proxy). See tests/season/README.md."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy
from tests.fixtures.hub import build_hub_db
from tests.fixtures.s3 import S3Server
from tests.fixtures.sandbox import Sandbox
from tests.season.scenario import DAYS, EVENTS, Season, tmpfs

pytestmark = pytest.mark.season


@pytest.fixture(scope="module")
def fresh_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database of a freshly installed hub (JupyterHub's ORM, no users): a new machine's."""
    return build_hub_db(tmp_path_factory.mktemp("fresh-hub") / "jupyterhub.sqlite", [])


def _report(season: Season, started: float) -> None:
    print(f"\nseason on {season.backend}: {DAYS} days in {time.monotonic() - started:.0f} s, "
          f"{len(season.ledger.runs)} runs committed, {len(season.ledger.alive())} kept, "
          f"{season.deep_checks} deep restores, {len(season.op.log)} jdr commands ({season.op.timings()})")
    print("\n".join(season.journal))


def test_season_on_a_file_repository(make_sandbox: Callable[..., Sandbox], tmp_path: Path, promtool: str,
                                     fresh_hub: Path) -> None:
    started = time.monotonic()
    with tmpfs(tmp_path / "repo-disk", "256m") as disk:
        sb = make_sandbox(f"file://{disk / 'repo'}", full_alice=True)
        season = Season(sb, tmp_path / "season", "file", fresh_hub, repo_mount=disk)
        season.tmp.mkdir()
        try:
            season.run()
        finally:
            season.world.unmount_all()
            _report(season, started)
    assert {d for d in EVENTS if d < DAYS} <= {int(j.split(":")[0].split()[1]) for j in season.journal if j.startswith("day ")}


@pytest.mark.s3
def test_season_on_s3(make_sandbox: Callable[..., Sandbox], s3_bucket: str, s3_server: S3Server,
                      tmp_path: Path, fresh_hub: Path, promtool: str) -> None:
    started = time.monotonic()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        sb = make_sandbox(s3_bucket, full_alice=True)
        season = Season(sb, tmp_path / "season", "s3", fresh_hub, proxy=proxy)
        season.tmp.mkdir()
        try:
            season.run()
        finally:
            season.world.unmount_all()
            _report(season, started)
    assert {d for d in EVENTS if d < DAYS} <= {int(j.split(":")[0].split()[1]) for j in season.journal if j.startswith("day ")}
