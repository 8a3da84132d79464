"""Human-readable rendering of operation results (``--json`` prints their ``to_dict()`` instead)."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dr.model import IndexEntry, Manifest
from dr.policy.keys import run_keys
from dr.util.timefmt import iso

if TYPE_CHECKING:
    from dr.catalog import RunRow


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def runs_table(rows: Sequence[RunRow]) -> str:
    if not rows:
        return "no runs yet"
    out = [f"{'RUN':<24} {'TIME (UTC)':<20} {'STATUS':<9} {'VOLUMES':>7} {'FAILED':>6} {'READ':>10} "
           f"{'STORED':>10}"]
    for r in rows:
        status = r.status if r.user_status is None else f"{r.status}/{r.user_status}"
        out.append(f"{r.id:<24} {r.time.strftime('%Y-%m-%d %H:%M:%S'):<20} {status:<9} {r.volumes:>7} "
                   f"{r.failed:>6} {human_bytes(r.bytes):>10} {human_bytes(r.stored):>10}")
    return "\n".join(out)


def manifest_text(m: Manifest) -> str:
    seconds = (m.finished - m.started).total_seconds()
    ok = sum(1 for v in m.volumes if v.status == "ok")
    failed = sum(1 for v in m.volumes if v.status == "failed")
    stored = sum(a.size for a in m.artifacts() if a.run == m.run)
    lines = [f"run {m.run}: {m.status}",
             f"  time        {m.started.strftime('%Y-%m-%d %H:%M:%S')} UTC, took {seconds:.1f} s "
             f"(finished {iso(m.finished)})",
             f"  deployment  {deployment_text(m.deployment)}",
             f"  volumes     {len(m.volumes)}: {ok} ok, {failed} failed"
             + "".join(f", {n} {st}" for st, n in _other_statuses(m).items()),
             f"  size        {human_bytes(sum(v.bytes for v in m.volumes))} in "
             f"{sum(v.files for v in m.volumes)} files; {human_bytes(stored)} stored by this run",
             f"  written by  jdr {m.jdr_version}"]
    if m.authenticity:
        lines.append("  MAC         " + ("verified" if m.authenticity == "verified" else
                                         f"NOT AUTHENTICATED ({m.authenticity}): restore and drill refuse it")
                     + (f" (key {m.mac_key})" if m.mac_key and m.authenticity != "misnamed" else ""))
    keys = run_keys(m)
    if keys.encrypted:
        lines.append("  keys: " + (", ".join(sorted(keys.fingerprints)) + " (any one of them restores this run)"
                                   if keys.known else "not recorded (encrypted by an older jdr)"))
    if m.hub is not None:
        if m.hub.db is not None:
            lines.append(f"  hub database: {m.hub.status}, {human_bytes(m.hub.db_bytes)}, revision "
                         f"{m.hub.alembic_revision}, {len(m.hub.users)} users")
            lines.append(f"    {m.hub.db.key}  {m.hub.db.size} bytes  sha256:{m.hub.db.sha256}")
        else:
            lines.append(f"  hub database: {m.hub.status} {m.hub.error or ''}")
        if m.hub.secret is not None:
            lines.append(f"  hub secret: {m.hub.secret.key} ({m.hub.secret.encoding})")
    for v in m.volumes:
        lines.append(f"  {v.label}: {v.status} ({v.method}), {v.files} files, {human_bytes(v.bytes)}"
                     + (f", unchanged since {v.reused_from}" if v.reused_from else "")
                     + (f" — {v.error}" if v.error else ""))
        for a in v.artifacts():
            lines.append(f"    {a.key}  {a.size} bytes  sha256:{a.sha256}")
        if v.snapshot is not None:
            lines.append(f"    snapshot {v.snapshot.namespace}/{v.snapshot.name} ({v.snapshot.restore_size})")
        lines += [f"    warning: {w}" for w in v.warnings[:10]]
        if len(v.warnings) > 10:
            lines.append(f"    … and {len(v.warnings) - 10} more warnings")
    for f in m.failures:
        lines.append(f"  FAILED: {f}")
    return "\n".join(lines)


def restore_total(plan: Any) -> tuple[int, int] | None:
    """(files, bytes) a restore plan will write, from the sizes recorded in the run (its index totals);
    None when some step restores only matching paths (their size is not known before reading the index)."""
    steps = list(getattr(plan, "volumes", ()))
    if not steps or any(step.paths for step in steps):
        return None
    return sum(step.item.files for step in steps), sum(step.item.bytes for step in steps)


def deployment_text(d: dict[str, Any]) -> str:
    """``local (hub_db /srv/…, homes /home/jupyter-{username})``: the manifest's deployment record, readable."""
    kind = str(d.get("kind", "?"))
    rest = [f"{k} {v}" for k, v in d.items() if k != "kind" and isinstance(v, str | int | float) and v != ""]
    return kind + (f" ({', '.join(rest)})" if rest else "")


def _other_statuses(m: Manifest) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in m.volumes:
        if v.status not in ("ok", "failed"):
            counts[v.status] = counts.get(v.status, 0) + 1
    return counts


def ls_line(e: IndexEntry) -> str:
    kind = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(e.type, stat.S_IFREG)
    mode = stat.filemode(kind | e.mode)
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(e.mtime, UTC).strftime("%Y-%m-%d %H:%M")
    name = e.name + ("/" if e.type == "dir" else "")
    if e.type == "symlink":
        name += " -> " + e.link.decode("utf-8", "replace")
    elif e.type == "hardlink":
        name += " => " + e.link.decode("utf-8", "replace")
    return f"{mode} {e.uid:>5} {e.gid:>5} {e.size:>12} {when} {name}"
