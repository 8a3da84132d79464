"""``jdr copy``'s decisions, without I/O: which runs to copy (newest first, only what the destination
lacks), when a destination is no copy of the source, and where the destination's credentials come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from dr import wiring
from dr.errors import ConfigError, RepositoryError, UsageError
from dr.operations.copy import CopyResult, RunCopy, check_compatible, plan_copy
from dr.settings import load_settings
from dr.util.timefmt import utcnow

A, B, C = "20261101T020000Z-aaaaaa", "20261102T020000Z-bbbbbb", "20261103T020000Z-cccccc"


def test_plan_copies_what_the_destination_lacks_newest_first() -> None:
    assert plan_copy([A, B, C], []) == ([C, B, A], 0)
    assert plan_copy([A, B, C], [A, C]) == ([B], 2)
    assert plan_copy([A, B, C], [A, B, C]) == ([], 3)
    assert plan_copy([A, B, C], [A], wanted=[A, C]) == ([C], 1)
    assert plan_copy([B], [A]) == ([B], 0)  # runs only the destination has (pruned at the source) stay


def test_a_destination_holding_another_repository_is_refused() -> None:
    src = {"format": "jdr-repository", "id": "one", "encrypted": True}
    check_compatible(src, dict(src, recipients=[]), "there")  # recipients may differ: brought up to date
    with pytest.raises(UsageError, match="another jdr repository"):
        check_compatible(src, dict(src, id="two"), "there")
    with pytest.raises(RepositoryError, match="not a jdr repository"):
        check_compatible(src, {"format": "restic"}, "there")
    with pytest.raises(RepositoryError, match="encryption"):
        check_compatible(src, dict(src, encrypted=False), "there")


def test_status_and_exit_codes() -> None:
    def result(*runs: RunCopy, error: str = "") -> CopyResult:
        return CopyResult("a", "b", utcnow(), runs=list(runs), error=error)

    assert (result().status, result().exit_code) == ("complete", 0)
    assert result(RunCopy(A, "copied")).exit_code == 0
    damaged = RunCopy(B, "failed", error="damaged")
    assert (result(RunCopy(A, "copied"), damaged).status, result(damaged).exit_code) == ("partial", 1)
    assert (result(damaged, error="down").status, result(damaged, error="down").exit_code) == ("failed", 3)
    assert result(RunCopy(A, "copied"), damaged, error="down").exit_code == 1


def test_destination_credentials_come_from_their_own_variables(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "jdr.yaml"
    cfg.write_text("repository: file:///nowhere\ncopy: {to: 's3://second/jdr', endpoint_url: 'http://127.0.0.1:9'}\n")
    settings = load_settings(cfg, environ={})
    monkeypatch.setenv("JDR_COPY_AWS_ACCESS_KEY_ID", "copy-key")
    monkeypatch.setenv("JDR_COPY_AWS_SECRET_ACCESS_KEY", "copy-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    store = wiring.make_copy_store(settings)
    creds = store.client._request_signer._credentials  # type: ignore[attr-defined]
    assert (creds.access_key, creds.secret_key) == ("copy-key", "copy-secret")
    assert store.url == "s3://second/jdr" and store.endpoint == "http://127.0.0.1:9"
    monkeypatch.delenv("JDR_COPY_AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="JDR_COPY_AWS_SECRET_ACCESS_KEY"):
        wiring.make_copy_store(settings)
    assert wiring.make_copy_store(settings, to=f"file://{tmp_path}").url == f"file://{tmp_path}"
    with pytest.raises(ConfigError, match=r"copy\.to"):
        wiring.make_copy_store(load_settings(None, environ={}))
