"""A plain ``jdr backup`` with nothing to report to skips the catalog sync after the run (its fixed cost:
the catalog's SQLAlchemy import and sync), and does it whenever metrics or a webhook will read it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from dr.cli import publishing
from dr.metrics import Metrics
from dr.settings import CatalogSettings, MetricsSettings, NotifySettings, Settings


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    import dr.operations.reporting as reporting

    @contextlib.contextmanager
    def catalog_for(settings: Settings, repo: Any) -> Iterator[None]:
        calls.append(repo)
        yield None

    monkeypatch.setattr(publishing, "catalog_for", catalog_for)
    monkeypatch.setattr(reporting, "after_backup", lambda *a, **k: calls.append("reported"))
    return calls


class _Repo:
    url, id = "file:///srv/backups/jdr", "r1"


def test_nothing_to_report_to_skips_the_catalog(opened: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """No catalog sync; the committed run is indexed in a SQLite catalog with sqlite3 (dr/catalog/lite.py), so the
    next `jdr list` finds it up to date; a run that committed nothing is not."""
    from dr.catalog import lite
    from dr.operations.backup import BackupResult

    indexed: list[Any] = []
    monkeypatch.setattr(lite, "add_run", lambda url, m, **ident: indexed.append((url, m, ident)))
    settings = dataclasses.replace(Settings(), catalog=CatalogSettings(url="sqlite:////tmp/jdrtsu/c.sqlite"))
    manifest = object()
    publishing.backup_done(settings, _Repo(), BackupResult("r", "complete", manifest))  # type: ignore[arg-type]
    publishing.backup_done(settings, _Repo(), BackupResult("r", "failed", manifest))  # type: ignore[arg-type]
    assert opened == []
    assert indexed == [("sqlite:////tmp/jdrtsu/c.sqlite", manifest,
                        {"repository_url": _Repo.url, "repository_id": "r1"})]


@pytest.mark.parametrize("settings, metrics", [
    (Settings(), Metrics()),  # jdr serve passes its own metrics
    (dataclasses.replace(Settings(), metrics=MetricsSettings(textfile_dir="/tmp/x")), None),
    (dataclasses.replace(Settings(), metrics=MetricsSettings(textfile="/tmp/x/jdr.prom")), None),
    (dataclasses.replace(Settings(), metrics=MetricsSettings(pushgateway="http://127.0.0.1:9")), None),
    (dataclasses.replace(Settings(), notify=NotifySettings(webhook="http://127.0.0.1:9/hook")), None),
])
def test_any_reader_gets_the_report(opened: list[Any], settings: Settings, metrics: Metrics | None) -> None:
    publishing.backup_done(settings, "repo", None, metrics)  # type: ignore[arg-type]
    assert opened == ["repo", "reported"]
