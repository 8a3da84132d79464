"""Manifest MACs (dr/crypto/mac.py): what is signed, what verifies, what does not."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from dr.crypto.mac import MacKey, MacKeyring, canonical, parse_keys

DOC = {"format": "jdr-manifest", "version": 1, "run": "20261125T191440Z-a1b2c3", "status": "complete",
       "volumes": [{"user": "Émile", "server": "", "seconds": 0.42, "archive": {"key": "data/x.tar.zst",
                    "size": 1234, "sha256": "ab" * 32}, "warnings": ["tab\there", "😀 astral"]}],
       "hub": None, "failures": []}


def signed(ring: MacKeyring, doc: dict) -> dict:
    """The document as jdr stores it and a reader parses it again."""
    stored = json.dumps({**doc, "mac": ring.sign(doc)}, indent=1, ensure_ascii=False)
    return json.loads(stored)


def test_a_signed_manifest_verifies_and_any_change_does_not() -> None:
    ring = MacKeyring([MacKey.generate()])
    doc = signed(ring, DOC)
    assert doc["mac"]["alg"] == "HMAC-SHA256" and doc["mac"]["key"] == ring.current.id
    assert ring.check(doc).status == "verified"
    # Reordering keys or whitespace does not matter (canonical form); content does.
    assert ring.check(json.loads(json.dumps(doc, sort_keys=True, indent=4))).verified
    for change in (lambda d: d["volumes"][0]["archive"].update(sha256="cd" * 32),
                   lambda d: d["volumes"][0]["archive"].update(key="data/attacker.tar.zst"),
                   lambda d: d["volumes"][0].update(user="alice"),
                   lambda d: d.update(run="20261126T000000Z-000000"),
                   lambda d: d["volumes"].append({"user": "mallory"}),
                   lambda d: d.update(extra=1)):
        forged = json.loads(json.dumps(doc))
        change(forged)
        assert ring.check(forged).status == "invalid"


def test_unsigned_unknown_key_and_malformed_mac() -> None:
    ring = MacKeyring([MacKey.generate()])
    other = MacKeyring([MacKey.generate()])
    assert ring.check(DOC).status == "unsigned"
    by_other = signed(other, DOC)
    verdict = ring.check(by_other)
    assert (verdict.status, verdict.key) == ("unknown-key", other.current.id)
    for mac in ("x", {"alg": "HMAC-SHA1", "key": ring.current.id, "value": "00"}, {"alg": "HMAC-SHA256"},
                {"alg": "HMAC-SHA256", "key": ring.current.id, "value": "é" * 64}):
        assert ring.check({**DOC, "mac": mac}).status == "invalid"
    # An attacker's own key id with a MAC made by their own key is not "verified" by ours.
    mallory = MacKey.generate()
    forged = signed(MacKeyring([mallory]), DOC)
    forged["mac"]["key"] = ring.current.id
    assert ring.check(forged).status == "invalid"


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    old, new = MacKey.generate(), MacKey.generate()
    before = signed(MacKeyring([old]), DOC)
    rotated = MacKeyring([new, old])
    after = signed(rotated, DOC)
    assert after["mac"]["key"] == new.id
    assert rotated.check(before).verified and rotated.check(after).verified
    assert MacKeyring([new]).check(before).status == "unknown-key"


def test_key_file_format() -> None:
    a, b = MacKey.generate(), MacKey.generate()
    keys = parse_keys(f"# a comment\n\n{a.text()}\n  {b.text()[:12] + b.text()[12:].upper()}\n")
    assert [k.id for k in keys] == [a.id, b.id]
    assert a.text().startswith("JDR-MAC-KEY-") and len(a.text()) == 12 + 64
    assert a.secret.hex() not in repr(a)
    for bad in ("", "# only a comment\n", "JDR-MAC-KEY-abc\n", "AGE-SECRET-KEY-1QQQ\n", "JDR-MAC-KEY-" + "g" * 64):
        with pytest.raises(ValueError) as e:
            parse_keys(bad)
        assert "QQQ" not in str(e.value)  # never quotes the text (it may be a secret)
    # The key id is HMAC-SHA256(key, "jdr-mac-key-id"), first 16 hex digits: reproducible with openssl.
    if shutil.which("openssl"):
        out = subprocess.run(["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{a.secret.hex()}"],
                             input=b"jdr-mac-key-id", capture_output=True, check=True).stdout.decode()
        assert out.strip().split()[-1][:16] == a.id


@pytest.mark.skipif(not shutil.which("jq"), reason="jq not installed")
def test_canonical_bytes_are_what_jq_prints() -> None:
    """docs/FORMAT.md tells how to check a MAC by hand with jq and openssl: the bytes must be the same."""
    doc = signed(MacKeyring([MacKey.generate()]), DOC)
    stored = json.dumps(doc, indent=1, ensure_ascii=False).encode()
    jq = subprocess.run(["jq", "-cjSa", "del(.mac)"], input=stored, capture_output=True, check=True).stdout
    assert jq == canonical(doc)
