"""Human-readable rendering of operation results (``--json`` prints their ``to_dict()`` instead)."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
    lines = [f"run {m.run}  {m.status}",
             f"  started  {iso(m.started)}", f"  finished {iso(m.finished)}",
             f"  deployment {m.deployment}", f"  jdr {m.jdr_version}"]
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
