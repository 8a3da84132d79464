"""A drill's findings as data, and the pure arithmetic of RPO and RTO; rendering lives in drill_html.

RPO (recovery point): how much work a disaster at drill time would lose — the drill's start minus the
restored run's start (the run captured the data as of its start, give or take its duration).

RTO (recovery time): how long a full restore takes — the wall time to restore the hub database plus the
wall time to restore every user's volume, restored one after another. When a drill restores only a sample
of the users, the volume part is extrapolated by bytes::

    rto ≈ hub_seconds + sampled_seconds * total_bytes / sampled_bytes

(by volume count when the sample holds no bytes). The report states which method gave the number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from dr.util.timefmt import iso, parse_iso

REPORT_FORMAT = "jdr-drill-report"
REPORT_VERSION = 1

RtoMethod = Literal["measured", "extrapolated-by-bytes", "extrapolated-by-count", "none"]


def rpo_seconds(drill_started: datetime, run_started: datetime) -> float:
    """Age of the restored data at drill time (never negative: clocks may disagree a little)."""
    return max(0.0, (drill_started - run_started).total_seconds())


@dataclass(frozen=True)
class RtoEstimate:
    seconds: float
    method: RtoMethod
    explanation: str
    hub_seconds: float
    volumes_seconds: float  # measured, for the volumes actually restored
    sampled_bytes: int
    total_bytes: int
    sampled_volumes: int
    total_volumes: int

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "method": self.method, "explanation": self.explanation,
                "hub_seconds": round(self.hub_seconds, 3), "volumes_seconds": round(self.volumes_seconds, 3),
                "sampled_bytes": self.sampled_bytes, "total_bytes": self.total_bytes,
                "sampled_volumes": self.sampled_volumes, "total_volumes": self.total_volumes}


def estimate_rto(hub_seconds: float, volume_seconds: list[float], sampled_bytes: int, total_bytes: int,
                 total_volumes: int) -> RtoEstimate:
    """RTO from measured timings. ``volume_seconds``: one wall time per restored volume; ``sampled_bytes``
    their bytes; ``total_bytes``/``total_volumes``: of every restorable volume of the run."""
    measured = sum(volume_seconds)
    n = len(volume_seconds)

    def make(seconds: float, method: RtoMethod, text: str) -> RtoEstimate:
        return RtoEstimate(seconds=seconds, method=method, explanation=text, hub_seconds=hub_seconds,
                           volumes_seconds=measured, sampled_bytes=sampled_bytes, total_bytes=total_bytes,
                           sampled_volumes=n, total_volumes=total_volumes)

    if n >= total_volumes:
        return make(hub_seconds + measured, "measured",
                    f"measured: hub database {hub_seconds:.2f} s + all {n} volumes {measured:.2f} s, "
                    "restored one after another")
    if n == 0:
        return make(hub_seconds, "none",
                    f"hub database only ({hub_seconds:.2f} s): no volume was restored, so the time to "
                    f"restore the {total_volumes} volumes is unknown")
    if sampled_bytes > 0 and total_bytes > 0:
        factor = total_bytes / sampled_bytes
        return make(hub_seconds + measured * factor, "extrapolated-by-bytes",
                    f"extrapolated by bytes: hub database {hub_seconds:.2f} s + {n} sampled of {total_volumes} "
                    f"volumes took {measured:.2f} s for {sampled_bytes} of {total_bytes} bytes, "
                    f"* {factor:.2f} = {measured * factor:.2f} s")
    factor = total_volumes / n
    return make(hub_seconds + measured * factor, "extrapolated-by-count",
                f"extrapolated by volume count (the sample holds no bytes): hub database {hub_seconds:.2f} s + "
                f"{n} sampled volumes took {measured:.2f} s, * {total_volumes}/{n} = {measured * factor:.2f} s")


def rate(nbytes: int, seconds: float) -> float:
    """Bytes per second (0 for no time)."""
    return nbytes / seconds if seconds > 0 else 0.0


@dataclass
class VolumeFinding:
    label: str
    user: str | None
    server: str = ""
    status: str = "ok"  # ok, failed
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    index_files: int = 0
    files_on_disk: int = 0
    notebooks_checked: int = 0
    notebooks_total: int = 0
    validator: str = ""
    target: str = ""
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "user": self.user, "server": self.server, "status": self.status,
                "files": self.files, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "bytes_per_second": round(rate(self.bytes, self.seconds), 1), "index_files": self.index_files,
                "files_on_disk": self.files_on_disk,
                "notebooks": {"checked": self.notebooks_checked, "found": self.notebooks_total,
                              "validator": self.validator},
                "target": self.target, "problems": list(self.problems)}


@dataclass
class DrillReport:
    """Everything a drill found. ``failures`` decides the outcome: a drill passes when it is empty."""

    drill: str
    started: datetime
    run: str = ""
    run_started: datetime | None = None
    finished: datetime | None = None
    target_kind: str = ""
    scratch: str = ""
    kept: bool = False
    hub: dict[str, Any] = field(default_factory=dict)
    users: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    volumes: list[VolumeFinding] = field(default_factory=list)
    hub_start: dict[str, Any] = field(default_factory=dict)
    rto: RtoEstimate | None = None
    leftovers_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def rpo(self) -> float:
        return rpo_seconds(self.started, self.run_started) if self.run_started else 0.0

    @property
    def restored_bytes(self) -> int:
        return sum(v.bytes for v in self.volumes) + int(self.hub.get("bytes", 0))

    @property
    def restore_seconds(self) -> float:
        return sum(v.seconds for v in self.volumes) + float(self.hub.get("seconds", 0.0))

    def fail(self, reason: str) -> None:
        self.failures.append(reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT, "version": REPORT_VERSION,
            "drill": self.drill, "status": "passed" if self.ok else "failed", "ok": self.ok,
            "started": iso(self.started), "finished": iso(self.finished) if self.finished else None,
            "run": self.run, "run_started": iso(self.run_started) if self.run_started else None,
            "rpo_seconds": round(self.rpo, 3),
            "rto_seconds": round(self.rto.seconds, 3) if self.rto else None,
            "rto": self.rto.to_dict() if self.rto else None,
            "restored_bytes": self.restored_bytes,
            "restore_seconds": round(self.restore_seconds, 3),
            "bytes_per_second": round(rate(self.restored_bytes, self.restore_seconds), 1),
            "target": {"kind": self.target_kind, "scratch": self.scratch, "kept": self.kept},
            "hub": self.hub, "users": self.users, "sample": self.sample,
            "volumes": [v.to_dict() for v in self.volumes],
            "hub_start": self.hub_start, "leftovers_removed": self.leftovers_removed,
            "notes": self.notes, "failures": self.failures,
        }


@dataclass(frozen=True)
class HistoryPoint:
    """One drill in the history chart."""

    drill: str
    time: datetime
    rto_seconds: float | None
    rpo_seconds: float
    ok: bool


def history_point(doc: dict[str, Any]) -> HistoryPoint | None:
    """A chart point from a drill's report.json document; None when it is not one."""
    if doc.get("format") != REPORT_FORMAT:
        return None
    try:
        rto = doc.get("rto_seconds")
        return HistoryPoint(drill=str(doc["drill"]), time=parse_iso(str(doc["started"])),
                            rto_seconds=float(rto) if rto is not None else None,
                            rpo_seconds=float(doc.get("rpo_seconds") or 0.0), ok=bool(doc.get("ok")))
    except (KeyError, ValueError, TypeError):
        return None
