"""Previews of text files and notebooks as HTML, with everything escaped: nothing from a user's file is
ever interpreted by the browser (no markdown, no HTML outputs, no scripts, no images by URL). A notebook is
shown cell by cell: markdown and code as preformatted text, and the text of outputs (streams,
``text/plain``, errors); rich outputs are named, not rendered. (nbconvert would render more; it is a large
dependency, and a preview needs to show *which* version this is, not to replace Jupyter.)"""

from __future__ import annotations

import json
from html import escape
from typing import Any

#: Bytes of a file a preview reads at most.
PREVIEW_BYTES = 2 * 1024 * 1024
_TEXT_SUFFIXES = (".txt", ".md", ".py", ".csv", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".r",
                  ".jl", ".sh", ".tex", ".bib", ".log", ".html", ".js", ".css", ".sql", ".c", ".h", ".cpp",
                  ".java", ".rst", ".tsv", ".xml", ".m", ".ipynb")


def previewable(name: str, size: int) -> bool:
    """Whether a preview is offered: known text suffixes (and notebooks) up to :data:`PREVIEW_BYTES`."""
    return size <= PREVIEW_BYTES and (name.lower().endswith(_TEXT_SUFFIXES) or "." not in name.rsplit("/")[-1])


def render(name: str, data: bytes) -> str:
    """HTML (a fragment) previewing ``data``, the content of the file ``name``."""
    if name.lower().endswith(".ipynb"):
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("cells"), list):
            return render_notebook(doc)
    if b"\0" in data[:8192]:
        return '<p class="note">This file is not text; download it instead.</p>'
    return f'<pre class="text">{escape(data.decode("utf-8", "replace"))}</pre>'


def render_notebook(doc: dict[str, Any]) -> str:
    parts = ['<div class="notebook">']
    for cell in doc["cells"]:
        if not isinstance(cell, dict):
            continue
        kind = str(cell.get("cell_type", ""))
        source = _text(cell.get("source"))
        label = {"code": "In", "markdown": "Markdown", "raw": "Raw"}.get(kind, escape(kind))
        count = cell.get("execution_count")
        prompt = f"{label} [{count}]" if kind == "code" and isinstance(count, int) else label
        parts.append(f'<section class="cell cell-{escape(kind)}"><div class="prompt">{escape(prompt)}</div>'
                     f'<pre class="source">{escape(source)}</pre>')
        for out in cell.get("outputs") or []:
            if isinstance(out, dict):
                parts.append(_output(out))
        parts.append("</section>")
    parts.append("</div>")
    return "".join(parts)


def _output(out: dict[str, Any]) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        return f'<pre class="output">{escape(_text(out.get("text")))}</pre>'
    if kind == "error":
        tb = "\n".join(_text(line) for line in out.get("traceback") or [])
        text = tb or f"{out.get('ename', '')}: {out.get('evalue', '')}"
        return f'<pre class="output error">{escape(_strip_ansi(text))}</pre>'
    data = out.get("data")
    if isinstance(data, dict):
        shown = ""
        if "text/plain" in data:
            shown = f'<pre class="output">{escape(_text(data["text/plain"]))}</pre>'
        rich = sorted(k for k in data if k != "text/plain")
        if rich:
            shown += f'<p class="note">[{escape(", ".join(rich))} output not shown]</p>'
        return shown
    return ""


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return "" if value is None else str(value)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
