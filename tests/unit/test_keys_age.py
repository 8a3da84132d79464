"""Several identities: key files with several AGE-SECRET-KEY lines, the keyring, and the real `age` CLI."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dr.crypto.age import NoIdentityMatches, encrypt_bytes, generate_identity
from dr.crypto.keyring import Keyring
from dr.crypto.keys import load_identities, load_identity, write_key_file
from dr.errors import ConfigError, IntegrityError

AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="the age CLI is not installed (scripts/setup installs it)")


def age(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    assert AGE is not None
    return subprocess.run([AGE, *args], input=stdin, capture_output=True, check=False)


def test_a_key_file_with_several_identities_loads_them_all_in_order(tmp_path: Path) -> None:
    ids = [generate_identity() for _ in range(3)]
    path = tmp_path / "keys.txt"
    path.write_text("# rotated keys\n" + "\n".join(f"# public key: {i.recipient}\n{i.secret_text()}\n"
                                                    for i in ids))
    loaded = load_identities(path=path)
    assert [i.recipient for i in loaded] == [i.recipient for i in ids]
    assert load_identity(path=path).recipient == ids[0].recipient  # the first one is the installation key
    assert [i.recipient for i in load_identities(text=path.read_text())] == [i.recipient for i in ids]


def test_one_bad_line_among_identities_is_refused_without_echoing_a_key(tmp_path: Path) -> None:
    good = generate_identity().secret_text()
    bad = good[:-3] + ("QQQ" if not good.endswith("QQQ") else "PPP")
    path = tmp_path / "keys.txt"
    path.write_text(f"{good}\n{bad}\n")
    with pytest.raises(ConfigError) as e:
        load_identities(path=path)
    assert str(path) in e.value.message and good not in str(e.value) and bad not in str(e.value)


def test_the_keyring_opens_with_any_identity_and_names_none() -> None:
    old, new, stranger = (generate_identity() for _ in range(3))
    ring = Keyring([new, old, new])  # duplicates collapse; the first is the installation key
    assert ring.current.recipient == new.recipient
    assert ring.fingerprints == [new.recipient.fingerprint, old.recipient.fingerprint]
    for to in (old, new):
        data = os.urandom(70_000)
        with ring.reader(io.BytesIO(encrypt_bytes(data, [to.recipient]))) as r:  # type: ignore[arg-type]
            assert r.read() == data
    with pytest.raises(NoIdentityMatches) as e:
        ring.reader(io.BytesIO(encrypt_bytes(b"x", [stranger.recipient])))  # type: ignore[arg-type]
    assert isinstance(e.value, IntegrityError)  # still an integrity failure for callers that don't care
    assert "AGE-SECRET-KEY" not in repr(ring)


@needs_age
def test_age_cli_takes_the_same_multi_identity_file(tmp_path: Path) -> None:
    """What jdr writes to the second of two recipients, `age -d -i FILE` opens with a two-key file."""
    first, second = generate_identity(), generate_identity()
    only_second = tmp_path / "second.txt"
    write_key_file(only_second, second)
    both = tmp_path / "both.txt"
    both.write_text(f"{first.secret_text()}\n{second.secret_text()}\n")
    data = os.urandom(200_000)
    sink = io.BytesIO()
    w = Keyring([first]).writer(sink, [second.recipient])  # writing needs only the recipients' public keys
    w.write(data)
    w.close()
    assert age("-d", "-i", str(both), stdin=sink.getvalue()).stdout == data
    assert age("-d", "-i", str(only_second), stdin=sink.getvalue()).stdout == data
    only_first = tmp_path / "first.txt"
    write_key_file(only_first, first)
    assert age("-d", "-i", str(only_first), stdin=sink.getvalue()).returncode != 0
    # and the reverse: age encrypts to the second recipient, jdr opens it with the two-key file
    ct2 = age("-r", second.recipient.text(), stdin=data).stdout
    with Keyring(load_identities(path=both)).reader(io.BytesIO(ct2)) as r:  # type: ignore[arg-type]
        assert r.read() == data
