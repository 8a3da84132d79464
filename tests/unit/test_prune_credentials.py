"""``repository.prune_credentials_env``: the prune role's S3 keys for prune only (docs/CREDENTIALS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dr import wiring
from dr.errors import EXIT_USAGE, ConfigError
from dr.repository.s3 import S3Store
from dr.settings import load_settings

ENV = {"JDR_REPOSITORY": "s3://my-bucket/jupyterhub", "JDR_REPOSITORY_ENDPOINT_URL": "http://127.0.0.1:9",
       "JDR_REPOSITORY_PRUNE_CREDENTIALS_ENV": "JDR_PRUNE_"}


def _keys(store: object) -> str:
    assert isinstance(store, S3Store)
    creds = store.client._request_signer._credentials  # what the requests would be signed with
    return str(creds.access_key)


def test_prune_alone_gets_the_prune_roles_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "BACKUPKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "backup-secret")
    monkeypatch.setenv("JDR_PRUNE_AWS_ACCESS_KEY_ID", "PRUNEKEY")
    monkeypatch.setenv("JDR_PRUNE_AWS_SECRET_ACCESS_KEY", "prune-secret")
    settings = load_settings(None, ENV)
    assert settings.repository.prune_credentials_env == "JDR_PRUNE_"
    assert _keys(wiring.make_store(settings, prune=True)) == "PRUNEKEY"
    assert _keys(wiring.make_store(settings)) == "BACKUPKEY"


def test_a_missing_prune_key_is_a_configuration_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JDR_PRUNE_AWS_ACCESS_KEY_ID", "PRUNEKEY")
    monkeypatch.delenv("JDR_PRUNE_AWS_SECRET_ACCESS_KEY", raising=False)
    settings = load_settings(None, ENV)
    with pytest.raises(ConfigError, match="JDR_PRUNE_AWS_SECRET_ACCESS_KEY") as e:
        wiring.make_store(settings, prune=True)
    assert e.value.exit_code == EXIT_USAGE
