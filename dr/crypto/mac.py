"""Manifest MACs: tamper evidence for runs (docs/FORMAT.md, "Manifest MAC"; docs/SECURITY.md).

A manifest carries ``"mac": {"alg": "HMAC-SHA256", "key": <key id>, "value": <hex>}``: HMAC-SHA256, under a
secret MAC key that only the operator holds, of the manifest's **canonical bytes** — the JSON document
without its top-level ``mac`` member, keys sorted, no insignificant whitespace, non-ASCII escaped as
``\\uXXXX`` (``json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``; the same
bytes as ``jq -cjSa 'del(.mac)'``). It covers everything the manifest says — the run id, every
artifact's key, size and SHA-256 — and nothing about where the repository lives, so a copy of a run to
another repository (byte for byte) still verifies.

A MAC key is 32 random bytes, written ``JDR-MAC-KEY-<64 hex digits>`` (one per line; ``#`` comments).
Its **key id** is the first 16 hex digits of HMAC-SHA256(key, ``jdr-mac-key-id``): it names the key in
manifests without revealing it. The first key of a :class:`MacKeyring` signs; every key verifies (so
runs signed before a rotation still verify while the old key is kept).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MAC_ALG = "HMAC-SHA256"
KEY_PREFIX = "JDR-MAC-KEY-"
_KEY_ID_LABEL = b"jdr-mac-key-id"

#: ``verified``: the MAC matches a held key; ``unsigned``: the manifest carries no MAC; ``unknown-key``:
#: signed with a key not held here; ``invalid``: a held key's MAC does not match (altered after signing),
#: or the ``mac`` member is malformed.
Authenticity = Literal["verified", "unsigned", "unknown-key", "invalid"]


@dataclass(frozen=True)
class MacKey:
    """One secret MAC key. ``repr`` never shows the secret."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError("a MAC key is 32 bytes")

    @property
    def id(self) -> str:
        return hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def text(self) -> str:
        """The key as a line of a key file: ``JDR-MAC-KEY-<64 hex digits>``."""
        return KEY_PREFIX + self.secret.hex()

    @classmethod
    def generate(cls) -> MacKey:
        return cls(secrets.token_bytes(32))


def parse_keys(text: str) -> list[MacKey]:
    """The keys of a key file's text, in order. Raises ValueError (never quoting the text) when a line
    that is not blank or a ``#`` comment is not ``JDR-MAC-KEY-`` and 64 hex digits, or none is found."""
    keys: list[MacKey] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body = line[len(KEY_PREFIX):] if line.startswith(KEY_PREFIX) else ""
        if len(body) != 64 or any(c not in "0123456789abcdefABCDEF" for c in body):
            raise ValueError(f"line {n} is not a MAC key (JDR-MAC-KEY- and 64 hex digits; "
                             "`jdr key mac-generate` makes one)")
        keys.append(MacKey(bytes.fromhex(body)))
    if not keys:
        raise ValueError("no MAC key found (a line JDR-MAC-KEY-…)")
    return keys


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes a manifest's MAC covers: the document without ``mac``, canonical JSON (module doc)."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class Verdict:
    status: Authenticity
    key: str = ""  # the key id the manifest names ("" when unsigned or malformed)

    @property
    def verified(self) -> bool:
        return self.status == "verified"


class MacKeyring:
    """The MAC keys one jdr process holds: ``keys[0]`` signs new manifests, all of them verify."""

    def __init__(self, keys: Sequence[MacKey]) -> None:
        if not keys:
            raise ValueError("a MacKeyring needs at least one key")
        unique: dict[str, MacKey] = {}
        for k in keys:
            unique.setdefault(k.id, k)
        self.keys = list(unique.values())
        self.current = self.keys[0]

    @property
    def ids(self) -> list[str]:
        return [k.id for k in self.keys]

    def sign(self, doc: dict[str, Any]) -> dict[str, str]:
        """The ``mac`` member for ``doc`` (a JSON-ready manifest document, any ``mac`` in it ignored).

        The document is normalised through a JSON round trip first, so the MAC is over exactly what a
        reader of the stored JSON will canonicalise."""
        normal = json.loads(json.dumps(doc, allow_nan=False))
        value = hmac.new(self.current.secret, canonical(normal), hashlib.sha256).hexdigest()
        return {"alg": MAC_ALG, "key": self.current.id, "value": value}

    def check(self, doc: dict[str, Any]) -> Verdict:
        """How ``doc`` (a manifest as parsed from its stored JSON) stands against the keys held."""
        mac = doc.get("mac")
        if mac is None:
            return Verdict("unsigned")
        if not isinstance(mac, dict) or mac.get("alg") != MAC_ALG or not isinstance(mac.get("key"), str) \
                or not isinstance(mac.get("value"), str):
            return Verdict("invalid")
        key = next((k for k in self.keys if k.id == mac["key"]), None)
        if key is None:
            return Verdict("unknown-key", mac["key"])
        try:
            expected = hmac.new(key.secret, canonical(doc), hashlib.sha256).hexdigest()
        except ValueError:  # NaN or the like: no manifest jdr signs holds one
            return Verdict("invalid", key.id)
        ok = hmac.compare_digest(expected.encode(), mac["value"].encode("utf-8", "replace"))
        return Verdict("verified" if ok else "invalid", key.id)
