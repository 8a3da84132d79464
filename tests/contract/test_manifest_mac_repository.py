"""Manifest MACs on every store (``file://`` and the real S3 server): a writer of the repository without
the MAC key cannot make a run that restore trusts (docs/SECURITY.md, "Tamper evidence").

The attacker here holds only the store (put/get/list: the bucket credentials of a backup job), never the
MAC key; jdr's side is a Repository opened with the operator's keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dr.crypto.age import generate_identity
from dr.crypto.keyring import Keyring
from dr.crypto.mac import MacKey, MacKeyring
from dr.errors import IntegrityError, TamperError
from dr.model import Artifact, HubItem, Manifest, VolumeItem
from dr.operations.prune import prune
from dr.policy.retention import RetentionPolicy
from dr.repository import layout
from dr.repository.artifacts import drain
from dr.repository.repository import Repository
from dr.repository.store import Store

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
KEY = MacKey.generate()


def run_id(ts: datetime, suffix: str) -> str:
    return ts.strftime("%Y%m%dT%H%M%SZ") + "-" + suffix


def put(repo: Repository, key: str, run: str, data: bytes, base: str = "zstd") -> Artifact:
    with repo.artifact_writer(key, run, base) as w:
        w.write(data)
    return w.artifact


def commit(repo: Repository, ts: datetime, suffix: str = "aaaaaa") -> Manifest:
    """A run with a hub database, a hub Secret, and alice's archive and index."""
    run = run_id(ts, suffix)
    enc = repo.encrypted
    db = put(repo, layout.hub_db_key(run, enc), run, b"database " * 50)
    secret = put(repo, layout.hub_secret_key(run, enc), run, b'{"kind": "Secret"}', "identity")
    archive = put(repo, layout.volume_archive_key(run, "alice-x", enc), run, b"archive " * 100)
    index = put(repo, layout.volume_index_key(run, "alice-x", enc), run, b"index " * 10)
    m = Manifest(run=run, started=ts, finished=ts + timedelta(seconds=5), status="complete",
                 deployment={"kind": "local"}, hub=HubItem(db=db, secret=secret, users=("alice",)),
                 volumes=(VolumeItem(key="alice-x", user="alice", archive=archive, index=index),))
    repo.commit_manifest(m)
    return m


def read_all(repo: Repository, art: Artifact) -> bytes:
    with repo.open_artifact(art) as src:
        data = src.read()
        drain(src)
    return data


@pytest.fixture(params=["plain", "encrypted"])
def repo(request: pytest.FixtureRequest, store: Store) -> Repository:
    keyring = Keyring([generate_identity()]) if request.param == "encrypted" else None
    return Repository.open(store, keyring, create=True, mac=MacKeyring([KEY]))


def test_a_run_jdr_commits_verifies_and_the_mac_does_not_depend_on_the_repository(repo: Repository) -> None:
    m = commit(repo, T0)
    doc = json.loads(repo.store.get(layout.manifest_key(m.run)))
    assert doc["mac"]["key"] == KEY.id and doc["mac"]["alg"] == "HMAC-SHA256"
    loaded = repo.load_manifest(m.run)
    assert (loaded.authenticity, loaded.mac_key) == ("verified", KEY.id)
    repo.require_authentic(loaded)
    # The same bytes in another repository (a copy) verify there too.
    other = Repository(repo.store, {**repo.config, "id": "another"}, repo.encryptor, mac=MacKeyring([KEY]))
    assert other.load_manifest(m.run).authenticity == "verified"


def test_forged_stripped_and_misnamed_manifests_are_refused(repo: Repository) -> None:
    good = commit(repo, T0)
    attacker = repo.store  # bucket access only
    doc = json.loads(attacker.get(layout.manifest_key(good.run)))

    # 1. A newer run copying the good one with alice's archive swapped for the attacker's own, which the
    #    attacker can make (and, in an encrypted repository, encrypt to the public recipients).
    evil_run = run_id(T0 + timedelta(days=1), "bbbbbb")
    evil = put(Repository(attacker, repo.config, repo.encryptor), f"data/{evil_run}/volumes/alice-x.tar.zst",
               evil_run, b"attacker's files")
    forged = json.loads(json.dumps(doc))
    forged["run"] = evil_run
    forged["volumes"][0]["archive"] = evil.to_dict()
    attacker.put(layout.manifest_key(evil_run), json.dumps(forged).encode())
    m = repo.load_manifest(evil_run)
    assert m.authenticity == "invalid"
    with pytest.raises(TamperError, match="does not match its MAC") as e:
        repo.require_authentic(m, allow_unsigned=True)  # no override for a contradicted MAC
    assert e.value.exit_code == 3

    # 2. The same without its MAC: unsigned, refused unless the operator says --allow-unsigned.
    del forged["mac"]
    attacker.put(layout.manifest_key(evil_run), json.dumps(forged).encode())
    m = repo.load_manifest(evil_run)
    assert m.authenticity == "unsigned"
    with pytest.raises(TamperError, match="carries no MAC"):
        repo.require_authentic(m)
    repo.require_authentic(m, allow_unsigned=True)

    # 3. The good, signed manifest copied byte for byte under a newer run's name (an old run as newest).
    newer = run_id(T0 + timedelta(days=2), "cccccc")
    attacker.put(layout.manifest_key(newer), attacker.get(layout.manifest_key(good.run)))
    m = repo.load_manifest(newer)
    assert (m.run, m.authenticity) == (newer, "misnamed")
    with pytest.raises(TamperError, match="says it is run"):
        repo.require_authentic(m, allow_unsigned=True)

    # 4. Signed by a key jdr is not configured with (e.g. the attacker's own): refused as unverified.
    theirs = Repository(attacker, repo.config, repo.encryptor, mac=MacKeyring([MacKey.generate()]))
    third = run_id(T0 + timedelta(days=3), "dddddd")
    forged_m = Manifest.from_dict({**forged, "run": third})
    attacker.put(layout.manifest_key(third), json.dumps({**forged_m.to_dict(),
                                                         "mac": theirs.mac.sign(forged_m.to_dict())}).encode())  # type: ignore[union-attr]
    m = repo.load_manifest(third)
    assert m.authenticity == "unknown-key"
    with pytest.raises(TamperError, match="not configured"):
        repo.require_authentic(m)

    # The good run still verifies; without any MAC key configured nothing is checked (as before).
    repo.require_authentic(repo.load_manifest(good.run))
    keyless = Repository(repo.store, repo.config, repo.encryptor)
    assert keyless.load_manifest(evil_run).authenticity == ""


def test_rotation_old_runs_verify_while_the_old_key_is_kept(store: Store) -> None:
    old, new = MacKey.generate(), MacKey.generate()
    before = commit(Repository.open(store, create=True, mac=MacKeyring([old])), T0)
    rotated = Repository.open(store, mac=MacKeyring([new, old]))
    after = commit(rotated, T0 + timedelta(days=1), "bbbbbb")
    assert rotated.load_manifest(after.run).mac_key == new.id
    assert {rotated.load_manifest(r).authenticity for r in (before.run, after.run)} == {"verified"}
    dropped = Repository.open(store, mac=MacKeyring([new]))
    assert dropped.load_manifest(before.run).authenticity == "unknown-key"
    assert dropped.load_manifest(after.run).authenticity == "verified"


@pytest.mark.parametrize("which", ["db", "secret", "archive", "index"])
def test_an_artifact_swapped_for_bytes_of_the_same_size_is_refused(repo: Repository, which: str) -> None:
    """The MAC binds each artifact's SHA-256; every kind of artifact is checked as it is read."""
    m = commit(repo, T0)
    assert m.hub is not None and m.hub.db is not None and m.hub.secret is not None
    art = {"db": m.hub.db, "secret": m.hub.secret, "archive": m.volumes[0].archive,
           "index": m.volumes[0].index}[which]
    assert art is not None
    read_all(repo, art)  # intact: reads
    original = repo.store.get(art.key)
    if repo.encrypted:  # a well-formed age file to the same recipients, of the same size
        forged = Repository(repo.store, repo.config, repo.encryptor)
        replacement = b""
        filler = 0
        while len(replacement) != len(original):
            tmp = put(forged, art.key + ".tmp", m.run, b"X" * (len(original) - 200 + filler), art.encoding.split("+")[0]
                      if art.encoding != "age" else "identity")
            replacement = repo.store.get(tmp.key)
            repo.store.delete(tmp.key)
            filler += len(original) - len(replacement)
    else:
        replacement = bytes(b ^ 0xFF for b in original[:8]) + original[8:]
    assert len(replacement) == len(original) and replacement != original
    repo.store.put(art.key, replacement)
    assert repo.load_manifest(m.run).authenticity == "verified"  # the manifest is the good one …
    with pytest.raises(IntegrityError, match="does not match its recorded SHA-256"):
        read_all(repo, art)  # … and the swapped bytes are refused by the hash it signs


def test_forged_runs_do_not_fill_retention_and_push_genuine_runs_out(store: Store) -> None:
    """A writer without delete rights floods runs/ with newer manifests, hoping the prune job (which may
    delete) drops the genuine runs to honour keep_last: prune counts only runs the key authenticates."""
    repo = Repository.open(store, create=True, mac=MacKeyring([KEY]))
    genuine = [commit(repo, T0, "aaaaaa").run, commit(repo, T0 + timedelta(days=1), "bbbbbb").run]
    doc = json.loads(store.get(layout.manifest_key(genuine[-1])))
    forged = []
    for day in (2, 3, 4):
        run = run_id(T0 + timedelta(days=day), "ffffff")
        store.put(layout.manifest_key(run), json.dumps({**doc, "run": run}).encode())  # MAC no longer matches
        forged.append(run)
    unsigned = run_id(T0 + timedelta(days=5), "eeeeee")
    store.put(layout.manifest_key(unsigned), json.dumps({k: v for k, v in {**doc, "run": unsigned}.items()
                                                          if k != "mac"}).encode())
    now = T0 + timedelta(days=6)
    result = prune(repo, RetentionPolicy.from_dict({"keep_last": 2}), UTC, now=now)
    assert result.runs_deleted == [] and result.artifacts_deleted == 0
    assert set(repo.run_ids()) == {*genuine, *forged, unsigned}
    left_alone = {d.run for d in result.decisions if d.keep and "not trusted" in d.reasons[0]}
    assert left_alone == {*forged, unsigned}
    # --allow-unsigned counts the unsigned run (made before MACs, say) but never the forged ones.
    result = prune(repo, RetentionPolicy.from_dict({"keep_last": 2}), UTC, now=now, allow_unsigned=True)
    assert result.runs_deleted == [genuine[0]]
    assert set(repo.run_ids()) == {genuine[1], *forged, unsigned}
