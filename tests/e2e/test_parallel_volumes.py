"""``backup.parallel_volumes`` (issue 12): a local backup archives several homes at once, bounded, and
records them in the same order, with the same content, as one after the other; the homes share one
compression pool (tests/unit/test_frames_shared_pool.py tests the pool itself).

Deterministic: a barrier inside the archiving of each home is passed only when two homes are being
archived at the same time (with one at a time it breaks after its timeout and the test fails); a counter
checks the bound; the first home finishes only after the second, so an item order that followed the
finishing order would show."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dr.deployments.local as local_mod
from dr.cli import jobs
from dr.settings import load_settings
from tests.fixtures.sandbox import small_home

USERS = ("alice", "bob", "alice@example.com", "Émile", "carol")  # tests/fixtures/hub.py's DEFAULT_USERS


def _settings(tmp_path: Path, make_hub_db: Callable[..., Path], parallel: int) -> Any:
    db = make_hub_db()  # the default users: a database other tests of the session already built
    homes = tmp_path / "home"
    for user in USERS:
        small_home(homes / f"jupyter-{user}", user)
        (homes / f"jupyter-{user}" / "big.bin").write_bytes(user.encode() * 200_000)
    cfg = tmp_path / "jdr.yaml"
    cfg.write_text(f"deployment: {{kind: local, hub_db: '{db}', homes: '{homes}/jupyter-{{username}}'}}\n"
                   f"repository: 'file://{tmp_path / 'repo'}'\n"
                   f"catalog: {{url: 'sqlite:///{tmp_path / 'catalog.sqlite'}'}}\n"
                   f"backup: {{parallel_volumes: {parallel}}}\n")
    return load_settings(cfg, environ={})


def _watch(monkeypatch: pytest.MonkeyPatch, meet: threading.Barrier | None) -> dict[str, int]:
    real = local_mod.backup_tree
    seen = {"now": 0, "most": 0, "calls": 0}
    mutex = threading.Lock()
    second_done = threading.Event()
    finished: list[str] = []
    started: list[str] = []
    pools: set[object] = set()  # the compression pools the homes were given

    def backup_tree(root: Path, *args: Any, **kwargs: Any) -> Any:
        with mutex:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            seen["calls"] += 1
            call = seen["calls"]
            started.append(root.name)
            pools.add(kwargs.get("pool"))
        try:
            if meet is not None and call <= 2:
                meet.wait()  # BrokenBarrierError (a failed test) unless another home is archived meanwhile
                if call == 1:
                    assert second_done.wait(timeout=60)
            return real(root, *args, **kwargs)
        finally:
            with mutex:
                seen["now"] -= 1
                finished.append(root.name)
            if call == 2:
                second_done.set()

    monkeypatch.setattr(local_mod, "backup_tree", backup_tree)
    seen["finished"], seen["started"], seen["pools"] = finished, started, pools  # type: ignore[assignment]
    return seen


def _summary(result: Any) -> list[tuple[str | None, str, int, int]]:
    return [(v.user, v.status, v.files, v.bytes) for v in result.manifest.volumes]


def test_homes_are_archived_two_at_a_time_in_order(tmp_path: Path, make_hub_db: Callable[..., Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _watch(monkeypatch, threading.Barrier(2, timeout=60))
    result = jobs.backup(_settings(tmp_path / "p", make_hub_db, 2))
    assert result.manifest is not None and result.manifest.status == "complete"
    assert seen["most"] == 2  # bounded by parallel_volumes, and really parallel (the barrier)
    pools = seen["pools"]
    assert len(pools) == 1 and None not in pools  # type: ignore[arg-type,operator]  # one compression pool for all
    parallel = _summary(result)
    assert sorted(u or "" for u, *_ in parallel) == sorted(USERS)
    first, second = seen["started"][:2]
    assert seen["finished"].index(first) > seen["finished"].index(second)  # the first finished later...

    monkeypatch.undo()
    seen = _watch(monkeypatch, None)
    serial = jobs.backup(_settings(tmp_path / "s", make_hub_db, 1))
    assert seen["most"] == 1
    assert serial.manifest is not None and _summary(serial) == parallel  # ... and is still listed first
    assert all(status == "ok" and size >= 200_000 * 3 for _, status, _, size in parallel)
