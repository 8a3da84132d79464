"""The repository's record of its recipients, in ``config.json`` (docs/FORMAT.md, "Keys").

An encrypted repository lists the public keys (``age1…``) every new artifact is encrypted to, each with
its fingerprint, a name and when it was added; keys no longer used (rotated away, removed) stay listed as
retired, because older runs still need them. Identities (secret keys) are never recorded. Pure: these
functions read and build plain ``config.json`` dictionaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dr.errors import ConfigError, RepositoryError

if TYPE_CHECKING:  # imported where used (parsing a recipient): `jdr backup` of an unencrypted repository
    from dr.crypto.age import Recipient  # and `jdr list` need no cryptography

RECIPIENTS = "recipients"
RETIRED = "retired_recipients"


@dataclass(frozen=True)
class RecipientEntry:
    """One public key of the repository (current or retired)."""

    recipient: str  # age1…
    fingerprint: str
    name: str = ""
    added: str = ""  # ISO-8601
    retired: str = ""  # ISO-8601, when it stopped being a recipient ("" while current)
    replaced_by: str = ""  # fingerprint of the key that replaced it in a rotation

    @classmethod
    def of(cls, recipient: Recipient | str, *, name: str = "", added: str = "") -> RecipientEntry:
        """An entry for ``recipient`` (parsed and checked when given as text; ConfigError if invalid)."""
        from dr.crypto.age import Recipient

        rec = recipient if isinstance(recipient, Recipient) else Recipient.parse(recipient)
        return cls(recipient=rec.text(), fingerprint=rec.fingerprint, name=name, added=added)

    def label(self) -> str:
        """``a1b2c3d4e5f60718 (recovery)``, or with ``retired …`` for a retired key."""
        extra = [self.name] if self.name else []
        if self.retired:
            extra.append(f"retired {self.retired[:10]}")
        return f"{self.fingerprint} ({', '.join(extra)})" if extra else self.fingerprint

    def to_dict(self) -> dict[str, Any]:
        d = {"recipient": self.recipient, "fingerprint": self.fingerprint, "name": self.name,
             "added": self.added}
        if self.retired:
            d.update(retired=self.retired, replaced_by=self.replaced_by)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> RecipientEntry:
        """Raises RepositoryError for an entry that is not a valid recipient or whose fingerprint lies."""
        if not isinstance(d, dict) or not isinstance(d.get("recipient"), str):
            raise RepositoryError("config.json: a recipient entry is malformed")
        from dr.crypto.age import Recipient

        try:
            rec = Recipient.parse(d["recipient"])
        except ConfigError as e:
            raise RepositoryError(f"config.json: {e.message}") from None
        if d.get("fingerprint") not in (None, rec.fingerprint):
            raise RepositoryError(f"config.json: the fingerprint of {rec.text()} is not {d.get('fingerprint')}")
        return cls(recipient=rec.text(), fingerprint=rec.fingerprint, name=str(d.get("name") or ""),
                   added=str(d.get("added") or ""), retired=str(d.get("retired") or ""),
                   replaced_by=str(d.get("replaced_by") or ""))


def recorded(config: dict[str, Any]) -> bool:
    """Whether the repository records its recipients (repositories made before jdr did so don't)."""
    return isinstance(config.get(RECIPIENTS), list)


def current(config: dict[str, Any]) -> list[RecipientEntry]:
    """The recipients every new artifact is encrypted to (empty when not recorded)."""
    return [RecipientEntry.from_dict(d) for d in config.get(RECIPIENTS) or []]


def retired(config: dict[str, Any]) -> list[RecipientEntry]:
    """Keys that older runs may need but new artifacts are no longer encrypted to."""
    return [RecipientEntry.from_dict(d) for d in config.get(RETIRED) or []]


def every(config: dict[str, Any]) -> list[RecipientEntry]:
    """Current then retired entries (a key retired and later added again appears once, as current)."""
    seen: set[str] = set()
    out: list[RecipientEntry] = []
    for e in [*current(config), *retired(config)]:
        if e.fingerprint not in seen:
            seen.add(e.fingerprint)
            out.append(e)
    return out


def with_recipients(config: dict[str, Any], now: Sequence[RecipientEntry],
                    gone: Iterable[RecipientEntry] = ()) -> dict[str, Any]:
    """A copy of ``config`` whose recipients are ``now``; ``gone`` are added to the retired ones.

    A key in ``now`` is taken off the retired list (it is current again). Raises ConfigError when ``now``
    is empty: an encrypted repository without a recipient could not be written to.
    """
    if not now:
        raise ConfigError("a repository needs at least one recipient")
    fps = {e.fingerprint for e in now}
    old_retired = {e.fingerprint: e for e in retired(config)}
    for e in gone:
        old_retired[e.fingerprint] = e
    out = dict(config)
    out[RECIPIENTS] = [replace(e, retired="", replaced_by="").to_dict() for e in now]
    out[RETIRED] = [e.to_dict() for fp, e in old_retired.items() if fp not in fps]
    return out


def describe(config: dict[str, Any], fingerprints: Iterable[str]) -> str:
    """Fingerprints with what the repository knows of them: ``a1b2… (installation key, retired …)``."""
    known = {e.fingerprint: e for e in every(config)}
    return ", ".join(known[fp].label() if fp in known else fp for fp in sorted(fingerprints)) or "none"
