"""A repository: runs, manifests and artifacts laid out on a store (docs/FORMAT.md).

The repository alone is enough to restore: ``config.json`` says what it is (and whether it is
encrypted), ``runs/<run>.json`` are the manifests, ``data/<run>/…`` the artifacts they name. A run without
a manifest does not exist; its leftovers are removed by the next prune (``sweep_dead_runs``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dr.errors import (
    IntegrityError,
    JdrError,
    KeyMismatchError,
    NotFoundError,
    ObjectNotFound,
    RepositoryError,
    TamperError,
    UsageError,
)
from dr.model import Artifact, Manifest, is_run_id
from dr.policy.object_lock import ObjectLockPolicy
from dr.repository import layout
from dr.repository.artifacts import ArtifactWriter, VerifiedReader, check_encodings, drain, is_encrypted
from dr.repository.lock import REFRESH_EVERY, RepositoryLock
from dr.repository.store import ObjectInfo, Retention, Store
from dr.util.timefmt import iso, real_utcnow, utcnow

if TYPE_CHECKING:  # imported where used: `jdr list` of an unencrypted repository needs no cryptography
    from dr.crypto.keyring import Keyring
    from dr.crypto.mac import MacKeyring
    from dr.repository import recipients

log = logging.getLogger(__name__)

REPO_FORMAT = "jdr-repository"
REPO_VERSION = 1


def initial_recipients(keyring: Keyring, added: str) -> list[recipients.RecipientEntry]:
    """The recipients of a new repository: the installation key, then ``encryption.recipients``."""
    from dr.repository import recipients

    entries = [recipients.RecipientEntry.of(keyring.current.recipient, name="installation key", added=added)]
    entries += [recipients.RecipientEntry.of(r, name="from encryption.recipients", added=added)
                for r in keyring.extra]
    unique: dict[str, recipients.RecipientEntry] = {}
    for e in entries:
        unique.setdefault(e.fingerprint, e)
    return list(unique.values())


class Repository:
    """Typed access to one repository. Create with :meth:`open` (or :meth:`init`)."""

    def __init__(self, store: Store, config: dict[str, Any], encryptor: Keyring | None = None,
                 stale_after: float = 900.0, refresh_every: float = REFRESH_EVERY,
                 mac: MacKeyring | None = None, lock_policy: ObjectLockPolicy | None = None) -> None:
        self.store = store
        self.config = config
        self.encryptor = encryptor
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        #: Manifest MAC keys (operator side): when set, new manifests are signed and only runs they
        #: authenticate are trusted (:meth:`require_authentic`). Never taken from the repository itself.
        self.mac = mac
        #: What retention runs get when the store locks objects (docs/FORMAT.md, "Object Lock"); None: the
        #: default mode with no known length (a locked bucket then needs repository.object_lock_days).
        self.lock_policy = lock_policy or ObjectLockPolicy(reason="no lock length is configured")
        self._run_retention: dict[str, Retention] = {}

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, encryptor: Keyring | None = None, *, create: bool = False,
             stale_after: float = 900.0, refresh_every: float = REFRESH_EVERY,
             mac: MacKeyring | None = None, lock_policy: ObjectLockPolicy | None = None) -> Repository:
        """Open the repository at ``store``; with ``create``, initialise an empty one.

        Raises NotFoundError when there is no repository and ``create`` is false, RepositoryError when
        the store holds something else, and UsageError when encryption settings do not match.
        """
        try:
            config = json.loads(store.get(layout.CONFIG))
        except ObjectNotFound as e:
            if not create:
                raise NotFoundError(f"no jdr repository at {store.url}",
                                    hint="run `jdr backup` once to create it, or check `repository`") from e
            config = {"format": REPO_FORMAT, "version": REPO_VERSION, "id": uuid.uuid4().hex,
                      "created": iso(utcnow()), "encrypted": encryptor is not None}
            if encryptor is not None:
                from dr.repository import recipients

                config = recipients.with_recipients(config, initial_recipients(encryptor, iso(utcnow())))
            store.put(layout.CONFIG, json.dumps(config, indent=2).encode())
            log.info("created repository %s", store.url)
        except ValueError as e:
            raise RepositoryError(f"{store.url}/{layout.CONFIG} is not valid JSON") from e
        if config.get("format") != REPO_FORMAT:
            raise RepositoryError(f"{store.url} is not a jdr repository")
        if int(config.get("version", 0)) > REPO_VERSION:
            raise RepositoryError(f"repository format {config.get('version')} is newer than this jdr; "
                                  "upgrade jdr")
        if config.get("encrypted") and encryptor is None:
            # Listing and reading manifests still works; artifacts cannot be decrypted.
            log.debug("repository %s is encrypted and no key is configured", store.url)
        if not config.get("encrypted") and encryptor is not None:
            raise UsageError(f"repository {store.url} was created without encryption, but an encryption "
                             "key is configured", hint="use a new repository URL for encrypted backups")
        return cls(store, config, encryptor, stale_after, refresh_every, mac=mac, lock_policy=lock_policy)

    @property
    def id(self) -> str:
        return str(self.config.get("id", ""))

    @property
    def encrypted(self) -> bool:
        return bool(self.config.get("encrypted"))

    @property
    def url(self) -> str:
        return self.store.url

    # --- recipients (docs/FORMAT.md, "Keys") -----------------------------------------------------

    @property
    def recipients(self) -> list[recipients.RecipientEntry]:
        """The public keys every new artifact is encrypted to (empty if unencrypted or not recorded)."""
        from dr.repository import recipients

        return recipients.current(self.config)

    def reload_config(self) -> None:
        """Read ``config.json`` again (another process may have changed the recipients)."""
        try:
            self.config = json.loads(self.store.get(layout.CONFIG))
        except ValueError as e:
            raise RepositoryError(f"{self.url}/{layout.CONFIG} is not valid JSON") from e

    def save_config(self, config: dict[str, Any]) -> None:
        """Replace ``config.json``. Call only under the exclusive lock; the id and format never change."""
        if config.get("id") != self.id or config.get("format") != REPO_FORMAT:
            raise RepositoryError("refusing to change the repository's id or format")
        self.store.put(layout.CONFIG, json.dumps(config, indent=2).encode())
        self.config = config

    def describe_keys(self, fingerprints: Iterable[str]) -> str:
        """``a1b2… (installation key, retired 2026-12-01), …`` for messages."""
        from dr.repository import recipients

        return recipients.describe(self.config, fingerprints)

    def missing_key(self, what: str, needed: Iterable[str]) -> KeyMismatchError:
        """The error for ``what`` (``run X``, an artifact) that no configured key opens."""
        needed = sorted(set(needed))
        held = self.encryptor.fingerprints if self.encryptor is not None else []
        need = (f"one of the keys {self.describe_keys(needed)}" if needed else
                "the key it was made with (its recipients were not recorded: made by an older jdr)")
        return KeyMismatchError(
            f"{what} is encrypted and no configured key opens it: it needs {need}; the configured keys "
            f"are {', '.join(held) or 'none'}. A key added or rotated in later cannot open runs made "
            "before it",
            hint="configure the key that run needs: encryption.key_file / key_env, or keep older keys "
                 "in encryption.identities (a key file may hold several AGE-SECRET-KEY lines); "
                 "`jdr key list` shows which runs need which key")

    # --- runs ------------------------------------------------------------------------------------

    def run_ids(self) -> list[str]:
        """Ids of every committed run, newest first."""
        ids = [r for o in self.store.list(layout.RUNS) if (r := layout.run_of_manifest_key(o.key))]
        return sorted((r for r in ids if is_run_id(r)), reverse=True)

    def load_manifest(self, run: str) -> Manifest:
        try:
            data = self.store.get(layout.manifest_key(run))
        except ObjectNotFound as e:
            raise NotFoundError(f"no run {run!r} in {self.url}", hint="`jdr list` shows the runs") from e
        try:
            doc = json.loads(data)
            manifest = Manifest.from_dict(doc)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise IntegrityError(f"manifest of run {run} is unreadable: {e}") from e
        if manifest.run != run:
            # A manifest copied under another run's name (an old run presented as the newest): listed
            # under its name, never trusted (require_authentic), whatever its MAC says.
            log.warning("manifest runs/%s.json says it is run %s", run, manifest.run)
            return replace(manifest, run=run).with_authenticity("misnamed", str(manifest.run))
        if self.mac is None:
            return manifest
        verdict = self.mac.check(doc)
        return manifest.with_authenticity(verdict.status, verdict.key)

    def require_authentic(self, manifest: Manifest, *, allow_unsigned: bool = False) -> None:
        """Raise TamperError unless a configured MAC key authenticates ``manifest`` (from
        :meth:`load_manifest`). Without MAC keys configured, everything passes (nothing to check with).

        ``allow_unsigned`` (the operator's explicit ``--allow-unsigned``) also accepts a manifest that
        carries no MAC or one by a key not configured; a MAC that a configured key contradicts (the
        manifest was altered after it was signed) is refused whatever the options."""
        status = manifest.authenticity
        run = manifest.run
        if status == "misnamed":
            raise TamperError(f"run {run}: its manifest (runs/{run}.json) says it is run {manifest.mac_key!r}: "
                              "it was copied or forged; refusing to use it",
                              hint="restore another run (`jdr verify` checks them all); investigate who can "
                                   "write to the repository")
        if self.mac is None or status == "verified":
            return
        if status == "invalid":
            raise TamperError(f"run {run}: its manifest does not match its MAC (key {manifest.mac_key or '?'}): "
                              "it was altered or forged by someone without the MAC key; refusing to use it",
                              hint="restore another run (`jdr verify` checks them all); investigate who can "
                                   "write to the repository")
        if allow_unsigned:
            log.warning("run %s: %s; used anyway (--allow-unsigned)", run, _unverified_text(manifest))
            return
        raise TamperError(f"run {run}: {_unverified_text(manifest)}: refusing to use it while a MAC key is "
                          "configured",
                          hint="restore a run that verifies (`jdr verify` checks them), configure the key "
                               "that signed it (encryption.mac_key_file: older keys on further lines), or, "
                               "for runs made before MACs were configured, pass --allow-unsigned")

    def manifests(self) -> Iterator[Manifest]:
        for run in self.run_ids():
            yield self.load_manifest(run)

    def resolve_run(self, ref: str | None = None, at: datetime | None = None) -> str:
        """A run id from ``latest``, a full id, a unique id prefix, or the newest at or before ``at``."""
        ids = self.run_ids()
        if not ids:
            raise NotFoundError(f"the repository {self.url} holds no runs yet")
        if at is not None:
            if ref not in (None, "latest"):
                raise UsageError("--run and --at cannot be used together")
            for run in ids:  # newest first
                if self.load_manifest(run).started <= at:
                    return run
            raise NotFoundError(f"no run at or before {iso(at)} (oldest is {ids[-1]})")
        if ref in (None, "", "latest"):
            return ids[0]
        assert ref is not None
        if ref in ids:
            return ref
        matches = [r for r in ids if r.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"run {ref!r} is ambiguous: {', '.join(matches[:5])}")
        raise NotFoundError(f"no run {ref!r} in {self.url}", hint="`jdr list` shows the runs")

    def commit_manifest(self, manifest: Manifest) -> None:
        """Write the manifest last: only after checking every artifact it names exists at its size and,
        when the store locks objects, is locked at least as long as this run (extended if not: an artifact
        reused from an earlier run); the manifest itself is written with the run's retention."""
        for art in manifest.artifacts():
            try:
                info = self.store.stat(art.key)
            except ObjectNotFound as e:
                raise IntegrityError(f"refusing to commit run {manifest.run}: artifact {art.key} is "
                                     "missing") from e
            if info.size != art.size:
                raise IntegrityError(f"refusing to commit run {manifest.run}: artifact {art.key} has "
                                     f"{info.size} bytes, expected {art.size}")
            try:
                self.ensure_retention(art.key, manifest.run, info)
            except JdrError as e:
                raise RepositoryError(f"refusing to commit run {manifest.run}: artifact {art.key} could not "
                                      f"be locked as long as the run: {e}", hint=e.hint) from e
        check_encodings([a.encoding for a in manifest.artifacts()])
        doc = manifest.to_dict()
        if self.mac is not None:
            doc["mac"] = self.mac.sign(doc)
        body = json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")
        self.store.put(layout.manifest_key(manifest.run), body, self.run_retention(manifest.run))

    def delete_manifest(self, run: str) -> None:
        self.store.delete(layout.manifest_key(run))

    # --- artifacts -------------------------------------------------------------------------------

    def artifact_writer(self, key: str, run: str, base_encoding: str = "zstd",
                        encrypt: bool | None = None) -> ArtifactWriter:
        """Start writing a new artifact; encrypted when the repository is."""
        enc = self.encrypted if encrypt is None else encrypt
        if enc and self.encryptor is None:
            raise UsageError("this repository is encrypted: configure `encryption.key_file` or "
                             "`encryption.key_env` to write to it")
        to = []
        if enc:
            from dr.crypto.age import Recipient

            to = [Recipient.parse(e.recipient) for e in self.recipients]
        if enc and not to:
            raise KeyMismatchError(f"repository {self.url} does not record its recipients yet",
                                   hint="run `jdr backup` once with the repository's key configured: "
                                        "it records them")
        encoding = (f"{base_encoding}+age" if base_encoding != "identity" else "age") if enc else base_encoding
        return ArtifactWriter(self.store, key, run, encoding, self.encryptor if enc else None, to,
                              retention=self.run_retention(run))

    def download_decompressed(self, artifact: Artifact, dest: Path) -> None:
        """Write a zstd-compressed artifact's content, decompressed, to ``dest`` (read to the end, so a
        stored copy that is not the recorded one raises IntegrityError)."""
        import zstandard

        with self.open_artifact(artifact) as src, open(dest, "wb") as out:
            reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True, closefd=False)
            while chunk := reader.read(1 << 20):
                out.write(chunk)
            drain(src)

    def open_artifact(self, artifact: Artifact) -> BinaryIO:
        """Stream an artifact's content (decrypted, still zstd-compressed when its encoding says so).

        The stream raises IntegrityError at EOF if the stored bytes are not the recorded ones (and
        earlier, on authentication failure, for encrypted artifacts). Read it to the end.
        """
        check_encodings([artifact.encoding])
        if is_encrypted(artifact.encoding):
            what = f"artifact {artifact.key} (of run {artifact.run or '?'})"
            if self.encryptor is None or (artifact.recipients and
                                          not set(artifact.recipients) & set(self.encryptor.fingerprints)):
                raise self.missing_key(what, artifact.recipients)
            from dr.crypto.age import NoIdentityMatches

            raw = VerifiedReader(self.store.open_reader(artifact.key), artifact)
            try:
                return self.encryptor.reader(raw)  # type: ignore[arg-type]
            except NoIdentityMatches as e:
                raise self.missing_key(what, artifact.recipients) from e
        return VerifiedReader(self.store.open_reader(artifact.key), artifact)  # type: ignore[return-value]

    def artifact_range(self, artifact: Artifact) -> tuple[Callable[[int, int], bytes], int]:
        """Random access to an artifact's content (decrypted, still zstd-compressed when its encoding
        says so): ``(fetch, size)``, where ``fetch(start, length)`` returns content bytes from one ranged
        read of the store, and ``size`` is the content's length.

        Unlike :meth:`open_artifact`, nothing checks the whole artifact's SHA-256 (it is not read): the
        caller checks what it reads (zstd frame checksums, file hashes of the index); encrypted content
        is authenticated chunk by chunk. Raises IntegrityError for a damaged range, KeyMismatchError
        when no held key opens the artifact.
        """
        check_encodings([artifact.encoding])

        def raw(start: int, length: int) -> bytes:
            return self.store.read_range(artifact.key, start, length)

        if not is_encrypted(artifact.encoding):
            return raw, artifact.size
        what = f"artifact {artifact.key} (of run {artifact.run or '?'})"
        if self.encryptor is None or (artifact.recipients and
                                      not set(artifact.recipients) & set(self.encryptor.fingerprints)):
            raise self.missing_key(what, artifact.recipients)
        from dr.crypto.age import NoIdentityMatches

        try:
            reader = self.encryptor.range_reader(raw, artifact.size)
        except NoIdentityMatches as e:
            raise self.missing_key(what, artifact.recipients) from e
        except IntegrityError as e:
            raise IntegrityError(f"{what}: {e}") from e

        def plain(start: int, length: int) -> bytes:
            try:
                return bytes(reader.read(start, length))
            except IntegrityError as e:
                raise IntegrityError(f"{what}: {e}") from e

        return plain, int(reader.size)

    def verify_artifact(self, artifact: Artifact) -> None:
        """Read the stored bytes and check size and SHA-256 (without decrypting)."""
        with VerifiedReader(self.store.open_reader(artifact.key), artifact) as r:
            while r.read(1 << 20):
                pass

    def artifact_exists(self, artifact: Artifact) -> bool:
        try:
            return self.store.stat(artifact.key).size == artifact.size
        except ObjectNotFound:
            return False

    # --- Object Lock (docs/FORMAT.md, "Object Lock") ------------------------------------------------

    @property
    def object_lock(self) -> bool:
        """Whether the store locks objects (asked of the store once per command)."""
        return self.store.object_lock_enabled()

    def run_retention(self, run: str) -> Retention | None:
        """The retention every artifact and the manifest of ``run`` get: None when the store does not
        lock. Fixed at the run's first write (real time: the store compares it with its own clock), so
        that every object of a run is locked until the same date as its manifest."""
        if self.lock_policy.deferred or not self.object_lock:
            return None
        if run not in self._run_retention:
            self._run_retention[run] = Retention(self.lock_policy.mode, self.lock_policy.until(real_utcnow()))
        return self._run_retention[run]

    def ensure_retention(self, key: str, run: str, info: ObjectInfo | None = None) -> None:
        """Make sure ``key`` (an artifact that ``run`` names, e.g. one it reuses) stays locked at least as
        long as ``run``: a stat (unless ``info`` is that stat's answer), and a PutObjectRetention when its
        lock ends sooner. Raises what the store raises (the caller re-reads the volume, or refuses to
        commit). Nothing to do when the store does not lock."""
        if not self.object_lock:
            return
        info = info or self.store.stat(key)
        wanted = self.run_retention(run)
        if wanted is None or (info.retention is not None and info.retention.until >= wanted.until):
            return
        # An object locked in the other mode keeps its mode (S3 refuses COMPLIANCE -> GOVERNANCE).
        mode = info.retention.mode if info.retention is not None else wanted.mode
        self.store.set_retention(key, Retention(mode, wanted.until))
        log.debug("extended the retention of %s to %s for run %s", key, iso(wanted.until), run)

    # --- locks and clean-up ----------------------------------------------------------------------

    def lock(self, operation: str, run: str = "", exclusive: bool = True) -> RepositoryLock:
        return RepositoryLock(self.store, "exclusive" if exclusive else "shared", operation, run,
                              stale_after=self.stale_after, refresh_every=self.refresh_every)

    def sweep_dead_runs(self, current_run: str) -> list[str]:
        """Delete artifacts of runs that never committed a manifest (but ``current_run``'s). Call only
        under an exclusive lock; prune does (a backup deletes nothing: docs/CREDENTIALS.md).

        Also discards uploads that were never completed. Returns the dead run ids cleaned up.
        """
        committed = set(self.run_ids())
        referenced: set[str] | None = None
        dead: dict[str, list[str]] = {}
        # Under Object Lock their objects are locked (a delete would only hide them behind a delete
        # marker, out of prune's sight): prune deletes them, version by version, once their date passed.
        for obj in ([] if self.object_lock else self.store.list(layout.DATA)):
            run = layout.run_of_data_key(obj.key)
            if run and run != current_run and run not in committed:
                # A run dropped by prune leaves the artifacts that kept runs still reference (an unchanged
                # volume's archive is referenced, not copied): those are not leftovers.
                if referenced is None:
                    referenced = {a.key for r in committed for a in self.load_manifest(r).artifacts()}
                if obj.key not in referenced:
                    dead.setdefault(run, []).append(obj.key)
        for run, keys in sorted(dead.items()):
            log.warning("cleaning up %d artifacts of run %s, which never completed", len(keys), run)
            for key in keys:
                self.store.delete(key)
        removed = self.store.cleanup_incomplete(real_utcnow())  # the store's times are real ones
        if removed:
            log.warning("discarded %d incomplete uploads left by an interrupted run", removed)
        return sorted(dead)

    # --- reports ---------------------------------------------------------------------------------

    def put_report(self, key: str, body: bytes) -> None:
        self.store.put(key, body)

    def get_report(self, key: str) -> bytes:
        return self.store.get(key)


def _unverified_text(manifest: Manifest) -> str:
    if manifest.authenticity == "unknown-key":
        return f"its manifest is signed with MAC key {manifest.mac_key}, which is not configured"
    return "its manifest carries no MAC (made before MACs were configured, or forged)"
