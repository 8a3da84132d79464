"""The repository's recipients on every store (``file://`` and the real S3 server): recorded at creation,
changed by add-recipient / remove-recipient / rotate, enforced before a backup writes, and artifacts that
the real ``age`` CLI opens with either of two identities."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from dr.crypto.age import AgeWriter, Identity, generate_identity
from dr.crypto.keyring import Keyring
from dr.crypto.keys import write_key_file
from dr.errors import EXIT_USAGE, KeyMismatchError, UsageError
from dr.model import Artifact, HubItem, Manifest, VolumeItem
from dr.operations import keys
from dr.repository import layout
from dr.repository.repository import Repository
from dr.repository.store import Store

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
AGE = shutil.which("age")


def now() -> datetime:
    return T0


def commit_run(repo: Repository, ts: datetime, data: bytes = b"home " * 1000) -> Manifest:
    run = ts.strftime("%Y%m%dT%H%M%SZ") + "-abcdef"
    cctx = zstandard.ZstdCompressor()
    with repo.artifact_writer(layout.volume_archive_key(run, "alice-x", True), run) as w:
        w.write(cctx.compress(data))
    with repo.artifact_writer(layout.volume_index_key(run, "alice-x", True), run) as iw:
        iw.write(cctx.compress(b"{}"))
    vol = VolumeItem(key="alice-x", user="alice", archive=w.artifact, index=iw.artifact)
    m = Manifest(run=run, started=ts, finished=ts + timedelta(seconds=1), status="complete",
                 deployment={"kind": "local"}, hub=HubItem(db=None, status="failed", error="test"), volumes=(vol,))
    repo.commit_manifest(m)
    return m


def read_plain(repo: Repository, art: Artifact) -> bytes:
    with repo.open_artifact(art) as src:
        return zstandard.ZstdDecompressor().decompress(src.read(), max_output_size=1 << 24)


@pytest.fixture
def a() -> Identity:
    return generate_identity()


@pytest.fixture
def b() -> Identity:
    return generate_identity()


def test_a_new_encrypted_repository_records_its_recipients_never_a_secret(store: Store, a: Identity,
                                                                         b: Identity) -> None:
    repo = Repository.open(store, Keyring([a], [b.recipient]), create=True)
    raw = store.get(layout.CONFIG).decode()
    doc = json.loads(raw)
    assert [r["fingerprint"] for r in doc["recipients"]] == [a.recipient.fingerprint, b.recipient.fingerprint]
    assert [r["recipient"] for r in doc["recipients"]] == [a.recipient.text(), b.recipient.text()]
    assert doc["recipients"][0]["name"] == "installation key" and doc["retired_recipients"] == []
    assert "AGE-SECRET-KEY" not in raw.upper()
    keys.check_backup_keys(repo, locked=True, now=now)  # the configured key is a recipient: fine
    plain = Repository.open(store)  # no key at all: manifests and the config still read
    assert plain.encrypted
    assert [e.fingerprint for e in plain.recipients] == [r["fingerprint"] for r in doc["recipients"]]


@pytest.mark.skipif(AGE is None, reason="the age CLI is not installed (scripts/setup installs it)")
def test_after_add_recipient_artifacts_open_with_either_identity_in_the_age_cli(
        store: Store, a: Identity, b: Identity, tmp_path: Path) -> None:
    repo = Repository.open(store, Keyring([a]), create=True)
    before = commit_run(repo, T0)
    change = keys.add_recipient(repo, b.recipient.text(), "recovery", now=now)
    assert change.changed and [e.fingerprint for e in change.recipients] == [a.recipient.fingerprint,
                                                                           b.recipient.fingerprint]
    assert change.reupload == ["alice"]  # the previous run's artifacts are not encrypted to b
    assert not keys.add_recipient(repo, b.recipient.text(), now=now).changed  # idempotent
    data = b"notebook contents\n" * 5000
    after = commit_run(repo, T0 + timedelta(days=1), data)
    art = after.volumes[0].archive
    assert art is not None and set(art.recipients) == {a.recipient.fingerprint, b.recipient.fingerprint}
    stored = store.get(art.key)
    for ident in (a, b):
        key_file = tmp_path / f"{ident.recipient.fingerprint}.txt"
        write_key_file(key_file, ident)
        out = subprocess.run([AGE, "-d", "-i", str(key_file)], input=stored, capture_output=True, check=True)
        assert zstandard.ZstdDecompressor().decompress(out.stdout, max_output_size=1 << 24) == data
    # jdr itself, holding only the recovery key, opens the new run but not the one made before it
    recovery_only = Repository.open(store, Keyring([b]))
    assert read_plain(recovery_only, art) == data
    old = before.volumes[0].archive
    assert old is not None
    with pytest.raises(KeyMismatchError) as e:
        recovery_only.open_artifact(old)
    assert a.recipient.fingerprint in e.value.message and "cannot open runs made before" in e.value.message
    assert e.value.exit_code == EXIT_USAGE


def test_a_key_that_is_not_a_recipient_is_refused_with_what_to_do(store: Store, a: Identity,
                                                                  b: Identity) -> None:
    Repository.open(store, Keyring([a]), create=True)
    other = Repository.open(store, Keyring([b]))
    for locked in (False, True):
        with pytest.raises(KeyMismatchError) as e:
            keys.check_backup_keys(other, locked=locked, now=now)
        assert b.recipient.fingerprint in e.value.message and a.recipient.fingerprint in e.value.message
        assert "add-recipient" in (e.value.hint or "") and "rotate" in (e.value.hint or "")
    with pytest.raises(KeyMismatchError, match="no encryption key"):
        keys.check_backup_keys(Repository.open(store), now=now)
    # encryption.recipients must already be recipients of an existing repository
    with pytest.raises(KeyMismatchError, match=r"encryption\.recipients") as e:
        keys.check_backup_keys(Repository.open(store, Keyring([a], [b.recipient])), now=now)
    assert f"add-recipient {b.recipient.text()}" in (e.value.hint or "")


def test_rotate_retires_the_old_key_and_the_old_key_is_then_refused(store: Store, a: Identity,
                                                                    b: Identity) -> None:
    recovery = generate_identity()
    repo = Repository.open(store, Keyring([a]), create=True)
    keys.add_recipient(repo, recovery.recipient.text(), now=now)
    commit_run(repo, T0)
    change = keys.rotate(repo, b.recipient, now=now)
    assert [e.fingerprint for e in change.recipients] == [b.recipient.fingerprint, recovery.recipient.fingerprint]
    (gone,) = change.retired
    assert gone.fingerprint == a.recipient.fingerprint and gone.replaced_by == b.recipient.fingerprint
    assert change.reupload == ["alice"] and any("encryption.identities" in s for s in change.next_steps)
    with pytest.raises(KeyMismatchError, match="retired") as e:
        keys.check_backup_keys(Repository.open(store, Keyring([a])), locked=True, now=now)
    assert "encryption.identities" in (e.value.hint or "")
    rotated = Repository.open(store, Keyring([b, a]))  # the new key writes; the old one still reads
    keys.check_backup_keys(rotated, locked=True, now=now)
    report = keys.list_keys(rotated)
    assert [e.fingerprint for e in report.retired] == [a.recipient.fingerprint]
    assert report.unreadable_runs == [] and report.configured == [b.recipient.fingerprint,
                                                                   a.recipient.fingerprint]
    with pytest.raises(UsageError, match="is the key it would replace"):
        keys.rotate(rotated, b.recipient, now=now)


def test_remove_recipient_keeps_it_retired_and_refuses_the_installation_key(store: Store, a: Identity,
                                                                            b: Identity) -> None:
    repo = Repository.open(store, Keyring([a]), create=True)
    keys.add_recipient(repo, b.recipient.text(), now=now)
    with pytest.raises(UsageError, match="installation key"):
        keys.remove_recipient(repo, a.recipient.fingerprint, now=now)
    change = keys.remove_recipient(repo, b.recipient.fingerprint, now=now)
    assert [e.fingerprint for e in change.recipients] == [a.recipient.fingerprint]
    assert [e.fingerprint for e in change.retired] == [b.recipient.fingerprint]
    assert not keys.remove_recipient(repo, b.recipient.text(), now=now).changed
    with pytest.raises(UsageError, match="not a recipient"):
        keys.remove_recipient(repo, "0123456789abcdef", now=now)
    keyless = Repository.open(store)
    with pytest.raises(UsageError, match="only recipient"):
        keys.remove_recipient(keyless, a.recipient.fingerprint, now=now)


def test_a_repository_made_before_recipients_were_recorded_adopts_the_key_that_opens_it(
        store: Store, a: Identity, b: Identity) -> None:
    # What an older jdr left: config.json without recipients, artifacts without recorded recipients.
    store.put(layout.CONFIG, json.dumps({"format": "jdr-repository", "version": 1, "id": "0" * 32,
                                         "created": "2026-11-01T00:00:00Z", "encrypted": True}).encode())
    run = "20261130T020000Z-aaaaaa"
    w = store.open_writer(layout.volume_archive_key(run, "alice-x", True))
    aw = AgeWriter(w, [a.recipient])
    aw.write(zstandard.ZstdCompressor().compress(b"old data"))
    aw.close()
    w.commit()
    key = layout.volume_archive_key(run, "alice-x", True)
    stored = store.get(key)
    art = Artifact(key=key, size=len(stored), sha256=hashlib.sha256(stored).hexdigest(), encoding="zstd+age",
                   run=run)
    legacy = Manifest(run=run, started=T0, finished=T0, status="complete", deployment={"kind": "local"},
                      hub=None, volumes=(VolumeItem(key="alice-x", user="alice", archive=art),))
    store.put(layout.manifest_key(run), json.dumps(legacy.to_dict()).encode())

    assert keys.list_keys(Repository.open(store)).unknown_runs == [run]
    assert keys.list_keys(Repository.open(store)).to_dict()["runs"] == [{"run": run, "keys": None}]
    with pytest.raises(KeyMismatchError, match=f"does not open run {run}"):
        keys.check_backup_keys(Repository.open(store, Keyring([b])), locked=True, now=now)
    assert "recipients" not in json.loads(store.get(layout.CONFIG))
    with pytest.raises(KeyMismatchError, match="older jdr"):
        Repository.open(store, Keyring([b])).open_artifact(art)
    with pytest.raises(KeyMismatchError, match="older jdr"):  # a restore is refused before it acts
        keys.check_run_keys(Repository.open(store, Keyring([b])), run, [art])
    keys.check_run_keys(Repository.open(store, Keyring([b, a])), run, [art])
    repo = Repository.open(store, Keyring([a]))
    keys.check_backup_keys(repo, locked=True, now=now)
    assert [e.fingerprint for e in Repository.open(store).recipients] == [a.recipient.fingerprint]
    assert read_plain(repo, art) == b"old data"
