"""The encryption settings become one keyring: the installation key first, then every identity to read with."""

from __future__ import annotations

from pathlib import Path

import pytest

from dr.crypto.age import generate_identity
from dr.crypto.keys import write_key_file
from dr.errors import ConfigError
from dr.settings import load_settings
from dr.wiring import make_encryptor


def settings(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "jdr.yaml"
    path.write_text("repository: file:///tmp/x\n" + text)
    return load_settings(path, environ=env)


def test_key_file_then_identities_in_order(tmp_path: Path) -> None:
    new, old, older = (generate_identity() for _ in range(3))
    write_key_file(tmp_path / "new.key", new)
    (tmp_path / "old.keys").write_text(f"# two retired keys\n{old.secret_text()}\n{older.secret_text()}\n")
    ring = make_encryptor(settings(tmp_path, f"encryption: {{key_file: {tmp_path / 'new.key'}, "
                                             f"identities: [{tmp_path / 'old.keys'}]}}\n"))
    assert ring is not None and ring.current.recipient == new.recipient
    assert ring.fingerprints == [i.recipient.fingerprint for i in (new, old, older)]


def test_key_env_may_hold_several_identities_and_recipients_are_extra(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    new, old, recovery = (generate_identity() for _ in range(3))
    monkeypatch.setenv("MY_KEYS", f"{new.secret_text()}\n{old.secret_text()}\n")
    env = {"JDR_ENCRYPTION_KEY_ENV": "MY_KEYS", "JDR_ENCRYPTION_RECIPIENTS": f"[{recovery.recipient}]"}
    ring = make_encryptor(settings(tmp_path, "", **env))
    assert ring is not None and ring.fingerprints == [new.recipient.fingerprint, old.recipient.fingerprint]
    assert ring.extra == [recovery.recipient]


def test_identities_without_an_installation_key_are_refused(tmp_path: Path) -> None:
    write_key_file(tmp_path / "old.key", generate_identity())
    with pytest.raises(ConfigError, match=r"encryption\.identities"):
        make_encryptor(settings(tmp_path, f"encryption: {{identities: [{tmp_path / 'old.key'}]}}\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        make_encryptor(settings(tmp_path, f"encryption: {{key_file: {tmp_path / 'old.key'}, "
                                          f"identities: [{tmp_path / 'missing.key'}]}}\n"))


def test_identities_files_cannot_reach_kubernetes_movers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_key_file(tmp_path / "old.key", generate_identity())
    monkeypatch.setenv("JDR_TEST_KEYS", generate_identity().secret_text())
    with pytest.raises(ConfigError, match=r"encryption\.identities: mover pods") as e:
        make_encryptor(settings(tmp_path, "deployment: {kind: kubernetes}\nencryption: {key_env: JDR_TEST_KEYS, "
                                          f"identities: [{tmp_path / 'old.key'}]}}\n"))
    assert "key_env" in (e.value.hint or "")
