"""The season: 120 days of a local hub, night after night, with the faults of a real term.

Each simulated day (in the hub's time zone, Europe/Berlin, so the term crosses the end of summer time and
the turn of the year):

1. the worker's jobs whose fire times fall on that day run at those times (backup, prune, drill), with the
   injected clock set to the fire time;
2. at 08:00 the administrator's checks (tests/season/invariants.py) run;
3. from 10:00 users work (each with some probability), and the day's events happen at 14:00.

Events are listed in :data:`EVENTS` and documented in tests/season/README.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dr.repository import layout
from dr.repository.repository import Repository
from dr.repository.store import Store
from tests.faultproxy import FaultProxy, Rule
from tests.fixtures.promtool import SeriesRecorder, Timeline, firing_alerts, names
from tests.fixtures.sandbox import Sandbox
from tests.season import invariants as inv
from tests.season.calendar import Fire, at, days, job_fires
from tests.season.operator import Operator
from tests.season.world import World, home_tree
from tests.treeutil import snapshot_tree, tree_diff

TZ = ZoneInfo("Europe/Berlin")
START = date(2026, 9, 25)
DAYS = int(os.environ.get("JDR_SEASON_DAYS") or 120)  # shorter only to debug the season by hand
SEED = 20260925
SCHEDULE = {"backup": "0 2 * * *", "prune": "30 3 * * *", "drill": "0 5 1 */3 *"}
POLICY = inv.Policy(keep_daily=7, keep_weekly=4, keep_monthly=3)
WORK_PROBABILITY = 0.35
MiB = 1 << 20

#: day -> event name (what happens on that day; night faults replace that night's backup).
EVENTS: dict[int, str] = {
    3: "frank joins",
    8: "carol joins, on a small volume",
    12: "carol fills her home",
    20: "bob is renamed robert",
    31: "night: the backup is killed before it commits",
    38: "robert deletes a notebook; his restore is killed mid-swap, then re-run",
    45: "Émile leaves (the hub user is deleted; the home stays, an orphan)",
    52: "night: the repository is unreachable or its disk is full",
    58: "the administrator removes Émile's orphan home",
    60: "gina joins",
    65: "a byte flips in the repository, in the archive of carol's unchanged home that every recent run reuses",
    70: "carol deletes a file; the restore of her full home runs out of space; a --path restore then works",
    75: "hank is added by an administrator and never logs in (no home)",
    80: "an offline recovery key is added as a recipient",
    95: "the installation key is rotated (the old one kept to read older runs)",
}


@dataclass
class Season:
    sb: Sandbox
    tmp: Path
    backend: str  # "file" or "s3"
    fresh_hub: Path  # the database of a freshly installed hub (no users), for the new machines of restores
    proxy: FaultProxy | None = None  # S3: the outage night's requests go through it
    repo_mount: Path | None = None  # file: the repository's own small filesystem
    world: World = field(init=False)
    op: Operator = field(init=False)
    ledger: inv.Ledger = field(default_factory=inv.Ledger)
    wrong_days: dict[int, set[str]] = field(default_factory=dict)  # day -> the alerts its 08:00 must show
    journal: list[str] = field(default_factory=list)
    deep_checks: int = 0
    keys: dict[str, tuple[Path, str]] = field(default_factory=dict)  # name -> (key file, fingerprint)
    expect_keys: set[str] = field(default_factory=set)  # names of the keys every new run must list
    sections: dict[str, Any] = field(default_factory=dict)  # the configuration, by section
    _killed_run: str | None = None
    _damage_found: bool = False  # verify has seen (and recorded) the damaged artifact
    _night_fault: str | None = None

    def __post_init__(self) -> None:
        self.world = World(self.sb, SEED)
        self.op = Operator(self.sb)
        self.origin = at(START, 0, 0, TZ)
        self.textfiles = self.tmp / "metrics"
        # The commands write simulated times already (the injected clock): sim seconds = value - origin.
        self.recorder = SeriesRecorder(Timeline.fixed(self.origin.timestamp()), interval=240,
                                       evaluation_interval=3600)
        self.store: Store = self.sb.store()  # one store for the season's own looks into the repository

    # --- set-up ---------------------------------------------------------------------------------------

    def configure(self) -> None:
        start = at(START, 0, 0, TZ)
        self.new_key("installation", start)
        self.expect_keys = {"installation"}
        self.write_config(
            repository=self.sb.repo_url, encryption={"key_file": str(self.keys["installation"][0])},
            retention=POLICY.as_settings(), schedule={**SCHEDULE, "timezone": str(TZ)},
            drill={"scratch": str(self.tmp / "drills")},
            metrics={"textfile_dir": str(self.textfiles)})
        (self.tmp / "drills").mkdir()

    def write_config(self, **sections: Any) -> None:
        self.sections.update(sections)
        self.sb.write_config(**self.sections)

    def new_key(self, name: str, now: datetime) -> str:
        path = self.tmp / "keys" / f"{name}.key"
        path.parent.mkdir(exist_ok=True)
        doc = self.op.run(now, "key", "generate", str(path)).doc
        self.keys[name] = (path, doc["fingerprint"])
        return str(doc["recipient"])

    # --- the term -------------------------------------------------------------------------------------

    def run(self) -> None:
        self.configure()
        first, end = at(START, 0, 0, TZ), at(START + timedelta(days=DAYS), 0, 0, TZ)
        fires = job_fires(SCHEDULE, TZ, first, end)
        by_day: dict[date, list[Fire]] = {}
        for f in fires:
            by_day.setdefault(f.when.astimezone(TZ).date(), []).append(f)
        for i, day in days(START, DAYS):
            self._night_fault = EVENTS.get(i, "") if EVENTS.get(i, "").startswith("night:") else None
            with self._night(i):
                for fire in by_day.get(day, []):
                    getattr(self, f"job_{fire.job}")(i, fire.when)
                    if self.textfiles.is_dir():  # what node_exporter exposes from a minute after the job
                        self.recorder.snapshot(self.sim(fire.when) + 60, self.textfiles)
            self.check(i, at(day, 8, 0, TZ))
            self.daytime(i, day)
        self.final_check(end)
        self.alerts_fire_on_the_wrong_days()

    @contextlib.contextmanager
    def _night(self, i: int) -> Iterator[None]:
        """The night's fault, around that night's jobs."""
        if self._night_fault and "unreachable" in self._night_fault:
            if self.proxy is not None:
                # S3 that night is reached through the fault proxy, which resets every connection (the
                # other nights go straight to SeaweedFS: every byte through a Python proxy is slow).
                self.proxy.add(Rule(action="reset", times=None))
                self.write_config(repository={"url": self.sb.repo_url, "endpoint_url": self.proxy.url})
                try:
                    yield
                finally:
                    self.write_config(repository=self.sb.repo_url)
                    self.proxy.clear()
                return
            assert self.repo_mount is not None
            with fill_disk(self.repo_mount):
                yield
            return
        yield

    def sim(self, when: datetime) -> float:
        return (when - self.origin).total_seconds()

    def alerts_fire_on_the_wrong_days(self) -> None:
        """docs/alerts.yaml, evaluated by promtool on the textfiles the commands wrote, at 08:00 of every
        day: exactly the alerts that the day's trouble implies, and none on the other days."""
        checks = {self.sim(at(START + timedelta(days=i), 8, 0, TZ)): i for i in range(DAYS)}
        fired = firing_alerts(self.recorder, checks, workdir=self.tmp)
        got = {checks[t]: names(a) for t, a in fired.items() if a}
        want = {i: alerts for i, alerts in self.wrong_days.items() if alerts}
        assert got == want, f"alerts fired {got}\nexpected {want}"
        self.journal.append(f"alerts: {len(got)} days with alerts, as expected: {got}")

    # --- the worker's jobs ----------------------------------------------------------------------------

    def job_backup(self, i: int, now: datetime) -> None:
        truth, users = self.world.snapshot(), self.world.users()
        if self._night_fault and "killed" in self._night_fault:
            self.op.kill_at(now, "backup-commit", "backup")
            dead = {layout.run_of_data_key(k) for k in inv.keys(self.store, layout.DATA)} - set(self.ledger.runs)
            assert len(dead) == 1, dead  # its artifacts are all there; its manifest is not
            self._killed_run = dead.pop()
            self.wrong_days[i] = {"JdrNoSuccessfulBackup"}  # a killed process publishes nothing
            self.journal.append(f"day {i}: backup killed before commit ({self._killed_run})")
            return
        if self._night_fault and "unreachable" in self._night_fault:
            out = self.op.run(now, "backup", expect=3)
            assert Repository.open(self.store).run_ids() == [r.run for r in self.ledger.alive()], "a run was committed"
            self.wrong_days[i] = {"JdrNoSuccessfulBackup", "JdrBackupFailed"}
            self.journal.append(f"day {i}: backup failed as expected ({out.doc.get('error')})")
            return
        out = self.op.run(now, "backup")
        doc = out.doc
        assert doc["status"] == "complete", out
        run = doc["run"]
        assert run.startswith(now.strftime("%Y%m%dT%H%M")), (run, now)  # the run id follows the clock
        if self._killed_run is not None:
            # The killed run's leftovers are gone: the prune after it removed them (a backup deletes nothing
            # but its lock, docs/CREDENTIALS.md).
            assert "cleaned_runs" not in doc, doc
            assert inv.keys(self.store, layout.run_data_prefix(self._killed_run)) == []
            self.journal.append(f"day {i}: the killed run's leftovers are gone (the prune removed them)")
            self._killed_run = None
        keys = inv.run_keys(doc["manifest"])
        want = {self.keys[k][1] for k in self.expect_keys}
        assert keys == want, f"run {run} opens with {sorted(keys)}, expected {sorted(want)} ({self.expect_keys})"
        volumes = inv.run_volumes(doc["manifest"])
        if self.ledger.damaged:
            # Once verify has found the damage, no new run names a damaged artifact: the volume is read again.
            named = {k for ks in volumes.values() for k in ks} & self.ledger.damaged
            assert not named or not self._damage_found, f"run {run} names damaged artifacts {named}"
        self.ledger.runs[run] = inv.RunRecord(run=run, started=now, status="complete", homes=truth,
                                              hub_users=users, day=i, keys=keys, volumes=volumes)

    def job_prune(self, i: int, now: datetime) -> None:
        before = self.ledger.alive()
        if self._night_fault and "unreachable" in self._night_fault:
            # Unreachable, or full: prune cannot even write its lock (so on a full disk the command that
            # frees space cannot run; the administrator must make room first).
            out = self.op.run(now, "prune", expect=3)
            self.wrong_days.setdefault(i, set()).add("JdrPruneFailed")
            self.journal.append(f"day {i}: prune failed as expected ({out.doc.get('error')})")
            return
        doc = self.op.run(now, "prune").doc
        assert set(doc["cleaned_runs"]) <= {self._killed_run}, doc["cleaned_runs"]
        kept = set(Repository.open(self.store).run_ids())
        assert kept <= {r.run for r in before}, "a run appeared during prune"
        assert set(doc["runs_deleted"]) == {r.run for r in before} - kept, doc
        inv.retention_holds(self.store, before, kept, POLICY, TZ)
        self.ledger.dropped |= {r.run for r in before} - kept

    def job_drill(self, i: int, now: datetime) -> None:
        doc = self.op.run(now, "drill").doc
        assert doc["ok"] is True, doc
        newest = self.ledger.alive()[0]
        assert doc["run"] == newest.run, (doc["run"], newest.run)
        self.journal.append(f"day {i}: drill of {doc['run']} passed")

    # --- the administrator's morning checks -------------------------------------------------------------

    def check(self, i: int, now: datetime) -> None:
        """Every run listed is the ledger's, every artifact is whole; one run restored deeply (the newest
        on even days, an older one picked at random on odd days; both on the day after an event)."""
        inv.listed_runs_are_the_committed_ones(self.op, self.ledger, now)
        inv.every_artifact_is_whole(self.op, self.store, self.ledger, now)
        if self.ledger.damaged and not self._damage_found:
            # verify recorded the damage just now; the next night's jobs publish the count, and the alert
            # fires at the next morning's evaluation, for one day (docs/alerts.yaml)
            self.wrong_days.setdefault(i + 1, set()).add("JdrRepositoryDamaged")
        self._damage_found = bool(self.ledger.damaged)
        alive = self.ledger.alive()
        if not alive:
            return
        sample = []
        if i % 2 == 0 or len(alive) == 1 or (i - 1) in EVENTS:
            sample.append(alive[0])
        if len(alive) > 1 and (i % 2 == 1 or (i - 1) in EVENTS):
            sample.append(self.world.rng.choice(alive[1:]))
        for record in sample:
            self.deep(record, now)

    def deep(self, record: inv.RunRecord, now: datetime) -> None:
        """Restore ``record`` on a new machine with one of the keys it lists (each in turn)."""
        usable = [path for path, fp in self.keys.values() if fp in record.keys]
        assert usable, f"run {record.run} lists no key we hold: {record.keys}"
        self.deep_checks += 1
        key = usable[self.deep_checks % len(usable)]
        inv.run_restores_exactly(self.op, self.sb, record, self.tmp / f"dr-{self.deep_checks}", now, key,
                                 self.fresh_hub, self.ledger.damaged_in(record))

    def final_check(self, end: datetime) -> None:
        now = end + timedelta(hours=8)
        inv.listed_runs_are_the_committed_ones(self.op, self.ledger, now)
        inv.every_artifact_is_whole(self.op, self.store, self.ledger, now)
        for record in self.ledger.alive():
            self.deep(record, now)

    # --- the day ----------------------------------------------------------------------------------------

    def daytime(self, i: int, day: date) -> None:
        rng = self.world.rng
        for user in self.world.users():
            if user in ("carol",) or not self.sb.home(user).is_dir():
                continue
            if rng.random() < WORK_PROBABILITY:
                self.world.work(user, at(day, 10 + rng.randrange(8), rng.randrange(60), TZ))
        event = EVENTS.get(i)
        if event and not event.startswith("night:"):
            self.journal.append(f"day {i}: {event}")
            handler: Callable[[int, datetime], None] = getattr(self, f"event_day_{i}")
            handler(i, at(day, 14, 0, TZ))

    def event_day_3(self, i: int, now: datetime) -> None:
        self.world.join("frank")

    def event_day_8(self, i: int, now: datetime) -> None:
        self.world.join("carol")
        self.world.mount_small_home("carol", "8m")

    def event_day_12(self, i: int, now: datetime) -> None:
        n = self.world.fill_home("carol", now)
        assert n > 50, n
        self.journal.append(f"day {i}: carol's home is full after {n} files")

    def event_day_20(self, i: int, now: datetime) -> None:
        self.world.rename("bob", "robert")

    def event_day_38(self, i: int, now: datetime) -> None:
        """robert deletes his notebook and asks for it back; the first restore is killed mid-swap, the
        second (the same command) finishes. His home is then exactly the latest run's, and what the
        restores replaced is his, in ``jdr-replaced-<time>/`` directories (dr/deployments/volume_swap.py)."""
        latest = next(r for r in self.ledger.alive() if "robert" in r.homes)
        home = self.sb.home("robert")
        (home / "notebooks" / "work.ipynb").unlink()
        before = home_tree(home)
        self.op.kill_at(now, "restore-move-out", "restore", "--user", "robert", "--yes", after=1)
        doc = self.op.run(now + timedelta(minutes=5), "restore", "--user", "robert", "--yes").doc
        assert doc["status"] == "done", doc
        kept = sorted(d.name for d in home.iterdir() if d.name.startswith("jdr-replaced-"))
        assert kept, "the replaced files were not kept"
        got = {k: v for k, v in home_tree(home).items()
               if not any(k == n.encode() or k.startswith(n.encode() + b"/") for n in kept)}
        want = inv.as_restored(latest.homes["robert"])
        assert {k: v for k, v in got.items() if k != b"."} == {k: v for k, v in want.items() if k != b"."}, \
            "\n".join(tree_diff(want, got)[:30])
        without_root = {k: v for k, v in before.items() if k != b"."}
        assert any({k: v for k, v in home_tree(home / n).items() if k != b"."} == without_root for n in kept), \
            f"none of {kept} holds the home as it was before the restore"
        self.journal.append(f"day {i}: robert's home restored after a kill; replaced files kept in {kept}")

    def event_day_45(self, i: int, now: datetime) -> None:
        self.world.leave("Émile")

    def event_day_58(self, i: int, now: datetime) -> None:
        self.world.remove_home("Émile")

    def event_day_75(self, i: int, now: datetime) -> None:
        self.world.join("hank", home=False)

    def event_day_80(self, i: int, now: datetime) -> None:
        """A recovery key, generated elsewhere and kept offline: only its public key is given to jdr."""
        recipient = self.new_key("recovery", now)
        self.op.run(now, "key", "add-recipient", recipient, "--name", "recovery (offline)")
        self.expect_keys = {"installation", "recovery"}

    def event_day_95(self, i: int, now: datetime) -> None:
        """Rotation: new runs use the new key; older runs keep needing the keys they list."""
        old_path, old_fp = self.keys["installation"]
        self.keys["retired"] = self.keys.pop("installation")
        self.new_key("installation-2", now)
        new_path = self.keys["installation-2"][0]
        self.op.run(now, "key", "rotate", "--new-key", str(new_path))
        self.write_config(encryption={"key_file": str(new_path), "identities": [str(old_path)]})
        self.expect_keys = {"installation-2", "recovery"}
        # A run from before the recovery key opens with the old key only; the new key alone is refused,
        # and the refusal names the key the run needs.
        oldest = self.ledger.alive()[-1]
        assert oldest.keys == {old_fp}, oldest.keys
        place = self.tmp / "dr-wrong-key"
        config = inv.dr_config(self.sb, place, new_path, self.fresh_hub)
        try:
            with inv.new_machine(self.sb, place):
                out = self.op.run(now, "restore", "--all", "--run", oldest.run, "--yes", config=config,
                                  expect=None)
        finally:
            shutil.rmtree(place)
        assert out.code in (2, 3) and old_fp in out.output, out
        self.journal.append(f"day {i}: run {oldest.run} refused the new key, naming {old_fp}")

    def event_day_60(self, i: int, now: datetime) -> None:
        self.world.join("gina")

    def event_day_65(self, i: int, now: datetime) -> None:
        """Bit rot: one byte of an archive that the newest run references, reused from an older run (carol's
        home has not changed for weeks). The next backup cannot know (same size); the morning's verify
        finds it and records it; the backup after that reads carol's home again."""
        newest = self.ledger.alive()[0]
        label = "carol"
        (key,) = [k for k in newest.volumes[label] if ".tar.zst" in k]
        assert not key.startswith(f"data/{newest.run}/"), "carol's archive is reused from an older run"
        data = bytearray(self.store.get(key))
        data[len(data) // 2] ^= 0x01
        self.store.put(key, bytes(data))
        self.ledger.damaged.add(key)
        runs = [r.run for r in self.ledger.alive() if key in r.volumes.get(label, set())]
        self.journal.append(f"day {i}: flipped a byte of {key}, named by {len(runs)} runs")

    def event_day_70(self, i: int, now: datetime) -> None:
        """carol's home is full: a whole-home restore needs room for a second copy, and must fail cleanly."""
        home = self.sb.home("carol")
        (home / "results" / "fill-0003.bin").unlink()
        before = home_tree(home)
        out = self.op.run(now, "restore", "--user", "carol", "--yes", expect=3)
        assert "no space left" in out.output.lower(), out
        after = home_tree(home)
        assert after == before, "\n".join(tree_diff(before, after)[:30])
        assert not list(home.glob(".jdr-restore*/staging*")), "the failed restore left its staging"
        for n in (10, 11, 12):
            (home / "results" / f"fill-{n:04d}.bin").unlink()
        doc = self.op.run(now + timedelta(minutes=10), "restore", "--user", "carol", "--path",
                          "results/fill-0003.bin", "--yes").doc
        assert doc["status"] == "done", doc
        latest = next(r for r in self.ledger.alive() if "carol" in r.homes)
        assert snapshot_tree(home / "results" / "fill-0003.bin", root_attrs=True)[b"."] == \
            latest.homes["carol"][b"results/fill-0003.bin"]


@contextlib.contextmanager
def fill_disk(mount: Path) -> Iterator[None]:
    """Fill the filesystem at ``mount`` to the last byte for the duration of the context."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * (1 << 16))
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 512)
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)
