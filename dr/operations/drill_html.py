"""Rendering a drill report (its report.json document) as Markdown and as a self-contained HTML page.

Pure functions of data. The HTML page has no scripts, no styles from elsewhere and no network access: the
history chart (RTO and RPO of earlier drills) is an inline SVG drawn here.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from dr.operations.drill_report import HistoryPoint


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4 min 05 s``, ``3 h 20 min``, ``5 d 4 h``."""
    if seconds is None:
        return "unknown"
    s = float(seconds)
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _volume_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for v in doc.get("volumes", []):
        nb = v.get("notebooks", {})
        rows.append([v["label"], v["status"].upper() if v["status"] != "ok" else "ok", str(v["files"]),
                     size(v["bytes"]), duration(v["seconds"]), size(v["bytes_per_second"]) + "/s",
                     f"{nb.get('checked', 0)}/{nb.get('found', 0)} ({nb.get('validator') or '-'})"])
    return rows


_VOLUME_HEAD = ["volume", "status", "files", "bytes", "time", "rate", "notebooks checked"]


def render_markdown(doc: dict[str, Any]) -> str:
    """The report as Markdown (also the text ``jdr drill`` prints)."""
    ok = doc.get("ok")
    rto = doc.get("rto") or {}
    hub = doc.get("hub") or {}
    users = doc.get("users") or {}
    lines = [
        f"# jdr drill {doc['drill']}: {'PASSED' if ok else 'FAILED'}",
        "",
        f"- run restored: `{doc.get('run') or '-'}` (started {doc.get('run_started') or '-'})",
        f"- drill: {doc['started']} → {doc.get('finished') or '-'}",
        f"- scratch place: {doc['target']['kind']} `{doc['target']['scratch']}`"
        + (" (kept)" if doc["target"].get("kept") else " (removed)"),
        f"- **RPO** {duration(doc.get('rpo_seconds'))} — age of the restored data at drill time",
        f"- **RTO** {duration(doc.get('rto_seconds'))} — {rto.get('explanation', 'not measured')}",
        f"- restored {size(doc.get('restored_bytes', 0))} in {duration(doc.get('restore_seconds'))} "
        f"({size(doc.get('bytes_per_second', 0))}/s)",
        "",
    ]
    if doc.get("failures"):
        lines += ["## Failures", ""] + [f"- {f}" for f in doc["failures"]] + [""]
    lines += ["## Hub database", ""]
    if hub:
        lines += [f"- integrity_check: {hub.get('integrity', '-')}",
                  f"- schema revision {hub.get('revision') or '-'}: {hub.get('schema', {}).get('message', '-')}",
                  f"- {size(hub.get('bytes', 0))} restored in {duration(hub.get('seconds'))}",
                  f"- users: {len(users.get('db', []))} in the restored database, "
                  f"{len(users.get('run', []))} in the run's manifest", ""]
    else:
        lines += ["- not restored", ""]
    if users.get("missing_from_run") or users.get("not_in_db") or users.get("skipped"):
        for key, title in (("missing_from_run", "users missing from the run"),
                           ("not_in_db", "volumes of users not in the database"),
                           ("skipped", "users skipped by the backup")):
            if users.get(key):
                lines.append(f"- {title}: {', '.join(users[key])}")
        lines.append("")
    sample = doc.get("sample") or {}
    lines += ["## Volumes", "",
              f"{len(sample.get('selected', []))} of {sample.get('restorable', 0)} restorable volumes restored"
              + (" (a sample)" if sample.get("sampled") else "") + ".", ""]
    rows = _volume_rows(doc)
    if rows:
        lines.append("| " + " | ".join(_VOLUME_HEAD) + " |")
        lines.append("|" + "---|" * len(_VOLUME_HEAD))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        lines.append("")
    start = doc.get("hub_start") or {}
    if start:
        lines += ["## Hub start", "", f"- {start.get('status')}: {start.get('note', '')}", ""]
    extra = list(doc.get("notes", []))
    if doc.get("leftovers_removed"):
        extra.append("removed leftovers of earlier drills: " + ", ".join(doc["leftovers_removed"]))
    if extra:
        lines += ["## Notes", ""] + [f"- {n}" for n in extra] + [""]
    return "\n".join(lines)


# --- HTML and the history chart --------------------------------------------------------------------

_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 640, 240, 64, 16, 24, 40


def _scale_unit(max_seconds: float) -> tuple[float, str]:
    for div, unit in ((86400.0, "days"), (3600.0, "hours"), (60.0, "minutes")):
        if max_seconds >= 2 * div:
            return div, unit
    return 1.0, "seconds"


def _polyline(points: list[tuple[float, float]], color: str, label: str) -> str:
    if not points:
        return ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points)
    return (f'<polyline class="{label}" fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>'
            + dots)


def history_svg(history: Sequence[HistoryPoint]) -> str:
    """An inline SVG line chart of RTO and RPO over the drills in ``history`` (oldest first is not
    required; points are sorted by time). Failed drills are marked with a red tick on the axis."""
    points = sorted(history, key=lambda p: p.time)
    if not points:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="40" role="img">' \
               '<text x="8" y="24">no drills yet</text></svg>'
    values = [p.rpo_seconds for p in points] + [p.rto_seconds for p in points if p.rto_seconds is not None]
    top = max(values) or 1.0
    div, unit = _scale_unit(top)
    top = top * 1.1
    t0, t1 = points[0].time.timestamp(), points[-1].time.timestamp()
    span = (t1 - t0) or 1.0
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def xy(t: float, v: float) -> tuple[float, float]:
        x = _PAD_L + (plot_w / 2 if t1 == t0 else (t - t0) / span * plot_w)
        return x, _PAD_T + plot_h - v / top * plot_h

    rto = [xy(p.time.timestamp(), p.rto_seconds) for p in points if p.rto_seconds is not None]
    rpo = [xy(p.time.timestamp(), p.rpo_seconds) for p in points]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
             'role="img" aria-label="RTO and RPO of past drills">',
             f'<line x1="{_PAD_L}" y1="{_PAD_T + plot_h}" x2="{_W - _PAD_R}" y2="{_PAD_T + plot_h}" '
             'stroke="#888"/>',
             f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{_PAD_T + plot_h}" stroke="#888"/>']
    for frac in (0.0, 0.5, 1.0):
        v = top * frac
        y = _PAD_T + plot_h - frac * plot_h
        parts.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                     f'{v / div:.3g}</text>')
    parts.append(f'<text x="8" y="14" font-size="11">{unit}</text>')
    for label, when in ((points[0].time, "start"), (points[-1].time, "end")):
        lx = _PAD_L if when == "start" else _W - _PAD_R
        anchor = "start" if when == "start" else "end"
        parts.append(f'<text x="{lx}" y="{_H - 22}" text-anchor="{anchor}" font-size="11">'
                     f'{label.strftime("%Y-%m-%d")}</text>')
    for p in points:
        if not p.ok:
            fx, _ = xy(p.time.timestamp(), 0)
            parts.append(f'<line class="failed" x1="{fx:.1f}" y1="{_PAD_T + plot_h - 6}" x2="{fx:.1f}" '
                         f'y2="{_PAD_T + plot_h + 6}" stroke="#c00" stroke-width="2"/>')
    parts.append(_polyline(rto, "#1f6feb", "rto"))
    parts.append(_polyline(rpo, "#d97706", "rpo"))
    parts.append(f'<text x="{_PAD_L + 8}" y="{_H - 6}" font-size="12" fill="#1f6feb">— RTO</text>'
                 f'<text x="{_PAD_L + 70}" y="{_H - 6}" font-size="12" fill="#d97706">— RPO</text>'
                 f'<text x="{_PAD_L + 132}" y="{_H - 6}" font-size="12" fill="#c00">| failed drill</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
          "text-align:left}.passed{color:#17803d}.failed{color:#c00}dt{font-weight:bold}dd{margin:0 0 .5rem 0}")


def render_html(doc: dict[str, Any], history: Sequence[HistoryPoint]) -> str:
    """A self-contained HTML page: the outcome, RTO/RPO, failures, volumes, and the history chart."""
    e = html.escape
    ok = bool(doc.get("ok"))
    rto = doc.get("rto") or {}
    hub = doc.get("hub") or {}
    summary = [
        ("Run restored", f"{doc.get('run') or '-'} (started {doc.get('run_started') or '-'})"),
        ("RPO", f"{duration(doc.get('rpo_seconds'))} (age of the restored data at drill time)"),
        ("RTO", f"{duration(doc.get('rto_seconds'))} ({rto.get('explanation', 'not measured')})"),
        ("Restored", f"{size(doc.get('restored_bytes', 0))} in {duration(doc.get('restore_seconds'))} "
                     f"({size(doc.get('bytes_per_second', 0))}/s)"),
        ("Hub database", f"integrity {hub.get('integrity', '-')}; "
                         f"{(hub.get('schema') or {}).get('message', '-')}"),
        ("Hub start", f"{(doc.get('hub_start') or {}).get('status', 'not tried')} "
                      f"{(doc.get('hub_start') or {}).get('note', '')}"),
        ("Scratch place", f"{doc['target']['kind']} {doc['target']['scratch']}"
                          + (" (kept)" if doc["target"].get("kept") else " (removed)")),
        ("Drill", f"{doc['started']} → {doc.get('finished') or '-'}"),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in summary)
    failures = "".join(f"<li>{e(f)}</li>" for f in doc.get("failures", []))
    notes = "".join(f"<li>{e(n)}</li>" for n in doc.get("notes", []))
    status = "passed" if ok else "failed"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>jdr drill {e(doc['drill'])}: {status}</title><style>{_STYLE}</style></head><body>"
        f"<h1>jdr drill {e(doc['drill'])}: <span class=\"{status}\">{status.upper()}</span></h1>"
        f"<dl>{dl}</dl>"
        + (f"<h2>Failures</h2><ul class=\"failures\">{failures}</ul>" if failures else "")
        + "<h2>Volumes</h2>" + _table(_VOLUME_HEAD, _volume_rows(doc))
        + f"<h2>Drill history</h2>{history_svg(history)}"
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "</body></html>\n"
    )
