"""Pure key policy: which keys open a run, which items a backup may reuse, the recipients record."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest

from dr.crypto.age import generate_identity
from dr.errors import ConfigError, RepositoryError
from dr.model import Artifact, HubItem, Manifest, Snapshot, VolumeItem
from dr.policy.keys import key_usage, reusable_previous, run_keys
from dr.repository import recipients
from dr.repository.recipients import RecipientEntry

T = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def art(name: str, *fps: str, encoding: str = "zstd+age", run: str = "r1") -> Artifact:
    return Artifact(key=f"data/{run}/{name}", size=1, sha256="0" * 64, encoding=encoding, run=run,
                    recipients=tuple(fps))


def vol(user: str, *fps: str, encoding: str = "zstd+age") -> VolumeItem:
    return VolumeItem(key=f"{user}-k", user=user, archive=art(f"{user}.tar", *fps, encoding=encoding),
                      index=art(f"{user}.idx", *fps, encoding=encoding), fingerprint="fp")


def manifest(run: str, hub_fps: tuple[str, ...], *volumes: VolumeItem) -> Manifest:
    return Manifest(run=run, started=T, finished=T, status="complete", deployment={"kind": "local"},
                    hub=HubItem(db=art("hub", *hub_fps, run=run)), volumes=volumes)


def test_a_run_opens_with_the_keys_common_to_all_its_artifacts() -> None:
    m = manifest("r2", ("new", "rec"), vol("alice", "old"), vol("bob", "new", "rec"))
    keys = run_keys(m)
    assert keys.encrypted and keys.known and keys.fingerprints == frozenset()  # no single key: the bug
    assert keys.opens_with(["old", "new", "rec"]) is False  # no *one* key opens it all
    ok = manifest("r3", ("new", "rec"), vol("alice", "new", "rec"), vol("bob", "rec", "new"))
    assert run_keys(ok).fingerprints == {"new", "rec"}
    assert run_keys(ok).opens_with(["rec"]) is True and run_keys(ok).opens_with(["old"]) is False


def test_unrecorded_and_unencrypted_runs() -> None:
    legacy = manifest("r1", (), vol("alice"))
    assert run_keys(legacy).known is False and run_keys(legacy).opens_with(["x"]) is None
    plain = manifest("r1", (), vol("alice", encoding="zstd"))
    plain = Manifest(**{**plain.__dict__, "hub": HubItem(db=art("hub", encoding="zstd"))})
    assert not run_keys(plain).encrypted and run_keys(plain).opens_with([]) is True


def test_reuse_only_what_is_encrypted_to_every_current_recipient() -> None:
    snap = VolumeItem(key="carol-k", user="carol", method="snapshot", snapshot=Snapshot("s", "ns"))
    failed = VolumeItem(key="dave-k", user="dave", status="failed", error="x")
    prev = manifest("r1", ("old",), vol("alice", "old"), vol("bob", "old", "rec"), vol("eve"), snap, failed)
    kept, dropped = reusable_previous(prev, ["old", "rec"])
    assert kept is not None
    assert [v.user for v in kept.volumes] == ["bob", "carol", "dave"]
    assert dropped == ["alice", "eve"]  # eve: recipients not recorded -> never reused
    same, none = reusable_previous(prev, [])  # unencrypted repository: nothing to require
    assert same is prev and none == []
    assert reusable_previous(None, ["x"]) == (None, [])
    # After a rotation old -> new, nothing encrypted to the old key alone is reused.
    kept, dropped = reusable_previous(prev, ["new", "rec"])
    assert kept is not None and [v.user for v in kept.volumes] == ["carol", "dave"]


def test_key_usage_lists_runs_per_key_newest_first() -> None:
    runs = [manifest("r3", ("new", "rec"), vol("a", "new", "rec")),
            manifest("r2", ("old", "rec"), vol("a", "old", "rec")),
            manifest("r1", ("old",), vol("a", "old")),
            manifest("r0", (), vol("a"))]
    usage = key_usage(runs)
    assert usage.by_key == {"new": ["r3"], "rec": ["r3", "r2"], "old": ["r2", "r1"]}
    assert usage.unknown == ["r0"] and usage.unencrypted == []


def test_fingerprint_is_what_the_documented_shell_command_prints() -> None:
    rec = generate_identity().recipient
    shell = subprocess.run(["sh", "-c", f"printf %s {rec.text()} | sha256sum | cut -c1-16"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert rec.fingerprint == shell and len(shell) == 16


def test_recipients_record_round_trip_retire_and_reinstate() -> None:
    a, b = (generate_identity().recipient for _ in range(2))
    ea = RecipientEntry.of(a, name="installation key", added="2026-12-01T00:00:00Z")
    eb = RecipientEntry.of(b.text(), name="recovery")
    cfg = recipients.with_recipients({"id": "x"}, [ea])
    assert recipients.recorded(cfg) and recipients.current(cfg) == [ea] and recipients.retired(cfg) == []
    gone = RecipientEntry(**{**ea.__dict__, "retired": "2026-12-02T00:00:00Z", "replaced_by": b.fingerprint})
    cfg2 = recipients.with_recipients(cfg, [eb], [gone])
    assert recipients.current(cfg2) == [eb] and recipients.retired(cfg2) == [gone]
    assert "retired 2026-12-02" in recipients.describe(cfg2, [a.fingerprint])
    assert [e.fingerprint for e in recipients.every(cfg2)] == [b.fingerprint, a.fingerprint]
    back = recipients.with_recipients(cfg2, [eb, ea])  # added again: no longer retired
    assert recipients.retired(back) == [] and len(recipients.current(back)) == 2
    assert not recipients.recorded({"id": "x"})
    with pytest.raises(ConfigError):
        recipients.with_recipients(cfg, [])
    with pytest.raises(ConfigError):
        RecipientEntry.of("age1notakey")


def test_a_recipient_entry_whose_fingerprint_lies_is_refused() -> None:
    a, b = (generate_identity().recipient for _ in range(2))
    with pytest.raises(RepositoryError, match="fingerprint"):
        RecipientEntry.from_dict({"recipient": a.text(), "fingerprint": b.fingerprint})
    with pytest.raises(RepositoryError):
        RecipientEntry.from_dict({"recipient": "AGE-SECRET-KEY-1XYZ"})
    assert RecipientEntry.from_dict({"recipient": a.text()}).fingerprint == a.fingerprint
