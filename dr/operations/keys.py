"""Key management: the repository's recipients, checked before a backup, changed by ``jdr key …``.

docs/FORMAT.md ("Keys") describes what is recorded. Contracts:

- :func:`check_backup_keys` refuses (KeyMismatchError, exit 2) a backup whose installation key is not one
  of the repository's recipients, before anything is uploaded; a repository made before recipients were
  recorded adopts the configured key, if that key opens its newest run.
- :func:`add_recipient`, :func:`remove_recipient` and :func:`rotate` change ``config.json`` under the
  repository's exclusive lock. None of them rewrites an artifact: the next backup re-uploads what it would
  otherwise reuse while it is not encrypted to every current recipient (dr.policy.keys).
- :func:`check_run_keys` refuses a restore (exit 2, naming the fingerprints needed) before anything is done
  when no configured key opens what the restore needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dr.errors import ConfigError, IntegrityError, KeyMismatchError, UsageError
from dr.model import Artifact, Manifest
from dr.policy.keys import is_encrypted, key_usage, reusable_previous, run_keys
from dr.repository import recipients
from dr.repository.recipients import RecipientEntry
from dr.repository.repository import Repository, initial_recipients
from dr.util.timefmt import iso, utcnow

if TYPE_CHECKING:  # imported where used: a backup of an unencrypted repository needs no cryptography
    from dr.crypto.age import Identity, Recipient

log = logging.getLogger(__name__)

Now = Callable[[], datetime]

_FIX = ("to give this key access to new runs beside the current keys: `jdr key add-recipient {rec}`; "
        "to replace the repository's key with it: `jdr key rotate --new-key FILE` with the current key "
        "configured (older runs keep needing the old key); otherwise configure the repository's key")


# --- before a backup ---------------------------------------------------------------------------------


def check_backup_keys(repo: Repository, *, locked: bool = False, now: Now = utcnow) -> None:
    """Refuse a backup that would write artifacts the configured key could not restore (exit 2).

    Call it before taking the lock (cheap: the config as opened) and again with ``locked`` under the
    exclusive lock: that re-reads ``config.json`` and records the recipients of an older repository.
    """
    if not repo.encrypted:
        return
    keyring = repo.encryptor
    if keyring is None:
        raise KeyMismatchError(f"repository {repo.url} is encrypted and no encryption key is configured",
                               hint="configure encryption.key_file (or key_env) with the repository's key; "
                                    "`jdr key list` shows its recipients")
    if locked:
        repo.reload_config()
        if not recipients.recorded(repo.config):
            adopt_recipients(repo, now)
    if not recipients.recorded(repo.config):
        return  # adopted (or refused) under the lock, before anything is written
    current = {e.fingerprint: e for e in repo.recipients}
    mine = keyring.current.recipient
    if mine.fingerprint not in current:
        gone = {e.fingerprint: e for e in recipients.retired(repo.config)}.get(mine.fingerprint)
        if gone is not None:
            raise KeyMismatchError(
                f"the configured key {mine.fingerprint} was retired from repository {repo.url} on "
                f"{gone.retired[:10]}" + (f" (replaced by {gone.replaced_by})" if gone.replaced_by else "")
                + f"; its recipients are {repo.describe_keys(current)}",
                hint="configure the new key as encryption.key_file (or key_env) and keep this one in "
                     "encryption.identities to restore the runs made before the rotation")
        raise KeyMismatchError(
            f"the configured key {mine.fingerprint} ({mine.text()}) is not a recipient of repository "
            f"{repo.url}, whose recipients are {repo.describe_keys(current)}; a backup with it would make "
            "runs that no single key restores",
            hint=_FIX.format(rec=mine.text()))
    for extra in keyring.extra:
        if extra.fingerprint not in current:
            raise KeyMismatchError(
                f"encryption.recipients lists {extra.fingerprint} ({extra.text()}), which is not a recipient "
                f"of repository {repo.url}",
                hint=f"add it: `jdr key add-recipient {extra.text()}` (or remove it from "
                     "encryption.recipients)")


def reusable(repo: Repository, previous: Manifest | None) -> Manifest | None:
    """``previous`` without the items a backup must archive again because they are not encrypted to
    every current recipient (logged by name)."""
    required = [e.fingerprint for e in repo.recipients] if repo.encrypted else []
    kept, dropped = reusable_previous(previous, required)
    for label in dropped:
        log.info("%s: its previous artifacts are not encrypted to every current recipient; archiving it "
                 "again", label)
    return kept


def adopt_recipients(repo: Repository, now: Now = utcnow) -> list[RecipientEntry]:
    """Record the recipients of a repository made before jdr recorded them. Call under the exclusive lock.

    The configured installation key (and ``encryption.recipients``) are adopted only if that key opens
    the newest run's encrypted artifacts, so a wrong key is refused here as well (KeyMismatchError).
    """
    keyring = repo.encryptor
    if keyring is None:
        raise KeyMismatchError(f"repository {repo.url} does not record its recipients yet",
                               hint="configure the repository's key (encryption.key_file or key_env) and "
                                    "run this again: its public key is then recorded")
    for run in repo.run_ids():
        manifest = repo.load_manifest(run)
        encrypted = [a for a in manifest.artifacts() if is_encrypted(a)]
        if not encrypted:
            continue
        if not _opens(repo, encrypted[0], [keyring.current]):
            mine = keyring.current.recipient
            raise KeyMismatchError(
                f"the configured key {mine.fingerprint} ({mine.text()}) does not open run {run}, the newest "
                f"of repository {repo.url}; a backup with it would make runs that no single key restores",
                hint="configure the key this repository was made with")
        break
    entries = initial_recipients(keyring, iso(now()))
    repo.save_config(recipients.with_recipients(repo.config, entries))
    log.warning("repository %s now records its recipients: %s", repo.url, repo.describe_keys(
        e.fingerprint for e in entries))
    return entries


def _opens(repo: Repository, artifact: Artifact, identities: Sequence[Identity]) -> bool:
    """Whether one of ``identities`` opens ``artifact`` (reads and authenticates only its header)."""
    from dr.crypto.age import AgeReader, NoIdentityMatches

    src = repo.store.open_reader(artifact.key)
    try:
        AgeReader(src, identities)
        return True
    except NoIdentityMatches:
        return False
    except IntegrityError:
        return True  # damaged is another matter (verify); the key itself matched
    finally:
        src.close()


# --- before a restore --------------------------------------------------------------------------------


def check_run_keys(repo: Repository, run: str, artifacts: Iterable[Artifact]) -> None:
    """Refuse (KeyMismatchError, exit 2) when no configured key opens one of ``artifacts`` of ``run``,
    naming the fingerprints it needs. An artifact whose recipients were not recorded (an older jdr) is
    tried: its header is read and authenticated."""
    keyring = repo.encryptor
    for a in artifacts:
        if not is_encrypted(a):
            continue
        if keyring is None or (a.recipients and not set(keyring.fingerprints) & set(a.recipients)):
            raise repo.missing_key(f"run {run}", a.recipients)
        if not a.recipients and not _opens(repo, a, keyring.identities):
            raise repo.missing_key(f"run {run}", ())


# --- changing the recipients -------------------------------------------------------------------------


@dataclass
class KeyChange:
    """What a ``jdr key`` command changed, and what follows from it."""

    action: str
    changed: bool
    recipients: list[RecipientEntry]
    added: list[RecipientEntry] = field(default_factory=list)
    retired: list[RecipientEntry] = field(default_factory=list)
    reupload: list[str] = field(default_factory=list)  # items the next backup archives again
    next_steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "changed": self.changed,
                "recipients": [e.to_dict() for e in self.recipients],
                "added": [e.to_dict() for e in self.added], "retired": [e.to_dict() for e in self.retired],
                "reupload": self.reupload, "next_steps": self.next_steps}

    def lines(self) -> list[str]:
        out = [f"{self.action}: " + ("done" if self.changed else "nothing to change")]
        out += [f"  added   {e.label()}  {e.recipient}" for e in self.added]
        out += [f"  retired {e.label()}  {e.recipient}" for e in self.retired]
        out.append("recipients of new artifacts:")
        out += [f"  {e.label()}  {e.recipient}" for e in self.recipients]
        if self.reupload:
            out.append(f"the next backup archives again ({len(self.reupload)}): " + ", ".join(self.reupload))
        out += [f"next: {s}" for s in self.next_steps]
        return out


def _locked_config(repo: Repository, now: Now) -> None:
    """Under the lock: fresh config; an encrypted repository whose recipients are recorded."""
    repo.reload_config()
    if not repo.encrypted:
        raise UsageError(f"repository {repo.url} is not encrypted: it has no recipients",
                         hint="encrypted backups need a new repository URL with encryption.key_file set")
    if not recipients.recorded(repo.config):
        adopt_recipients(repo, now)


def _reupload(repo: Repository) -> list[str]:
    latest = _latest(repo)
    return reusable_previous(latest, [e.fingerprint for e in repo.recipients])[1]


def _latest(repo: Repository) -> Manifest | None:
    for run in repo.run_ids():
        m = repo.load_manifest(run)
        if m.status in ("complete", "partial"):
            return m
    return None


def _find(entries: Iterable[RecipientEntry], ref: str) -> RecipientEntry | None:
    ref = ref.strip()
    for e in entries:
        if ref in (e.fingerprint, e.recipient):
            return e
    return None


def add_recipient(repo: Repository, recipient: str, name: str = "", now: Now = utcnow) -> KeyChange:
    """Make ``recipient`` (``age1…``) a recipient of every new artifact, e.g. an offline recovery key.

    Needs no secret key: encrypting to a public key is what anyone may do. Idempotent.
    """
    try:
        entry = RecipientEntry.of(recipient, name=name or "recovery", added=iso(now()))
    except ConfigError as e:
        raise UsageError(f"{e.message}: {recipient[:8]}…") from None
    with repo.lock("key add-recipient"):
        _locked_config(repo, now)
        current = repo.recipients
        if _find(current, entry.fingerprint) is not None:
            return KeyChange("add-recipient", False, current)
        repo.save_config(recipients.with_recipients(repo.config, [*current, entry]))
        change = KeyChange("add-recipient", True, repo.recipients, added=[entry], reupload=_reupload(repo))
    change.next_steps.append(f"keep the identity of {entry.fingerprint} safe and offline: it alone restores "
                             "every run made from now on (runs made before do not include it)")
    return change


def remove_recipient(repo: Repository, ref: str, now: Now = utcnow) -> KeyChange:
    """Stop encrypting new artifacts to the recipient ``ref`` (fingerprint or ``age1…``).

    It stays listed as retired: artifacts already encrypted to it still open with its key. Refuses to
    remove the last recipient, or the configured installation key (that is what ``rotate`` is for).
    """
    with repo.lock("key remove-recipient"):
        _locked_config(repo, now)
        current = repo.recipients
        entry = _find(current, ref)
        if entry is None:
            if _find(recipients.retired(repo.config), ref) is not None:
                return KeyChange("remove-recipient", False, current)
            raise UsageError(f"{ref!r} is not a recipient of repository {repo.url}",
                             hint="`jdr key list` shows the recipients and their fingerprints")
        if repo.encryptor is not None and entry.fingerprint == repo.encryptor.current.recipient.fingerprint:
            raise UsageError(f"{entry.fingerprint} is the configured installation key",
                             hint="to replace it use `jdr key rotate --new-key FILE`")
        rest = [e for e in current if e.fingerprint != entry.fingerprint]
        if not rest:
            raise UsageError(f"{entry.fingerprint} is the repository's only recipient; refusing to remove it")
        gone = replace(entry, retired=iso(now()))
        repo.save_config(recipients.with_recipients(repo.config, rest, [gone]))
        change = KeyChange("remove-recipient", True, repo.recipients, retired=[gone])
    change.next_steps.append(f"artifacts already encrypted to {entry.fingerprint} still open with its key; "
                             "only new ones are not encrypted to it")
    return change


def new_recipient(new_key: Path | None, new_recipient_text: str | None) -> Recipient:
    """The recipient named by ``--new-key FILE`` (an age key file) or ``--new-recipient age1…``."""
    if (new_key is None) == (new_recipient_text is None):
        raise UsageError("give exactly one of --new-key FILE or --new-recipient AGE1…")
    from dr.crypto.age import Recipient
    from dr.crypto.keys import load_identity

    if new_key is not None:
        return load_identity(path=new_key).recipient
    assert new_recipient_text is not None
    try:
        return Recipient.parse(new_recipient_text)
    except ConfigError as e:
        raise UsageError(f"--new-recipient: {e.message}") from None


def rotate(repo: Repository, new: Recipient, old: str | None = None, name: str = "",
           now: Now = utcnow) -> KeyChange:
    """Replace recipient ``old`` (default: the configured installation key) by ``new``.

    New runs are encrypted to ``new`` (and the other current recipients, e.g. a recovery key); ``old`` is
    retired. Earlier runs stay encrypted to the keys they list; the next backup re-uploads every item it
    would otherwise reuse while encrypted to ``old`` only, so that each run opens with the keys it lists.
    """
    if old is None:
        if repo.encryptor is None:
            raise UsageError("no installation key is configured: say which recipient to replace with --old")
        old = repo.encryptor.current.recipient.fingerprint
    with repo.lock("key rotate"):
        _locked_config(repo, now)
        current = repo.recipients
        entry = _find(current, old)
        if entry is None:
            raise UsageError(f"{old} is not a recipient of repository {repo.url} (recipients: "
                             f"{repo.describe_keys(e.fingerprint for e in current)})",
                             hint="`jdr key list` shows the recipients; --old names the one to replace")
        if entry.fingerprint == new.fingerprint:
            raise UsageError(f"the new key {new.fingerprint} is the key it would replace")
        stamp = iso(now())
        added = RecipientEntry.of(new, name=name or entry.name or "installation key", added=stamp)
        already = _find(current, new.fingerprint) is not None
        rest = [added if e.fingerprint == entry.fingerprint else e for e in current
                if not (already and e.fingerprint == entry.fingerprint)]
        gone = replace(entry, retired=stamp, replaced_by=new.fingerprint)
        repo.save_config(recipients.with_recipients(repo.config, rest, [gone]))
        change = KeyChange("rotate", True, repo.recipients, added=[] if already else [added], retired=[gone],
                           reupload=_reupload(repo))
    change.next_steps += [
        f"configure the new key {new.fingerprint} as encryption.key_file (or key_env): backups with the "
        f"old key {entry.fingerprint} are now refused",
        f"keep the old key in encryption.identities (or as a second line of the key file) to restore runs "
        f"made before now: they need {entry.fingerprint}",
    ]
    return change


# --- listing -----------------------------------------------------------------------------------------


@dataclass
class KeyReport:
    """``jdr key list``: the recipients, the configured keys, which runs each key restores, and the keys
    each run lists (``runs``: newest first; ``keys`` is null when not recorded, [] when not encrypted)."""

    url: str
    encrypted: bool
    recorded: bool
    recipients: list[RecipientEntry]
    retired: list[RecipientEntry]
    configured: list[str]
    runs_by_key: dict[str, list[str]]
    unknown_runs: list[str]
    unreadable_runs: list[str]  # runs that no configured key opens
    run_keys: dict[str, list[str] | None] = field(default_factory=dict)  # run -> the keys it lists

    def _entry(self, e: RecipientEntry, current: bool) -> dict[str, Any]:
        return {**e.to_dict(), "current": current, "configured": e.fingerprint in self.configured,
                "runs": self.runs_by_key.get(e.fingerprint, [])}

    def to_dict(self) -> dict[str, Any]:
        return {"repository": self.url, "encrypted": self.encrypted, "recorded": self.recorded,
                "recipients": [self._entry(e, True) for e in self.recipients],
                "retired": [self._entry(e, False) for e in self.retired],
                "configured": self.configured, "unknown_runs": self.unknown_runs,
                "unreadable_runs": self.unreadable_runs,
                "runs": [{"run": run, "keys": fps} for run, fps in self.run_keys.items()]}

    def lines(self) -> list[str]:
        if not self.encrypted:
            return [f"repository {self.url} is not encrypted"]
        out = [f"repository {self.url}"]
        if not self.recorded:
            out.append("  recipients not recorded yet (made by an older jdr): the next backup records them")
        for title, entries in (("recipients (every new artifact is encrypted to each)", self.recipients),
                               ("retired (older runs may need them)", self.retired)):
            if not entries:
                continue
            out.append(f"{title}:")
            for e in entries:
                runs = self.runs_by_key.get(e.fingerprint, [])
                mark = "  [configured]" if e.fingerprint in self.configured else ""
                span = f"{len(runs)} runs ({runs[-1]} … {runs[0]})" if len(runs) > 1 else \
                    (f"1 run ({runs[0]})" if runs else "no runs")
                out.append(f"  {e.fingerprint}  {e.name or '-'}{mark}")
                out.append(f"      {e.recipient}  added {e.added[:10] or '?'}"
                           + (f", retired {e.retired[:10]}" if e.retired else "") + f"; restores {span}")
        out.append("configured keys: " + (", ".join(self.configured) or "none"))
        if self.unknown_runs:
            out.append(f"runs whose keys were not recorded ({len(self.unknown_runs)}): "
                       + ", ".join(self.unknown_runs[:10]))
        if self.unreadable_runs:
            out.append(f"runs that no configured key opens ({len(self.unreadable_runs)}): "
                       + ", ".join(self.unreadable_runs[:10]))
        return out


def list_keys(repo: Repository) -> KeyReport:
    """The repository's keys and their runs, from ``config.json`` and the manifests (no key needed)."""
    manifests = list(repo.manifests())
    usage = key_usage(manifests)
    held = repo.encryptor.fingerprints if repo.encryptor is not None else []
    unreadable = [m.run for m in manifests if run_keys(m).opens_with(held) is False]
    listed: dict[str, list[str] | None] = {}
    for m in manifests:
        keys = run_keys(m)
        listed[m.run] = sorted(keys.fingerprints) if keys.known else None  # [] when not encrypted
    return KeyReport(url=repo.url, encrypted=repo.encrypted, recorded=recipients.recorded(repo.config),
                     recipients=repo.recipients, retired=recipients.retired(repo.config), configured=held,
                     runs_by_key=usage.by_key, unknown_runs=usage.unknown, unreadable_runs=unreadable,
                     run_keys=listed)
