"""``--path`` selections: which entries of a volume a partial restore (or ``jdr ls``) is about."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

from dr.model import IndexEntry

_ROOT = b"."


def path_matcher(globs: Sequence[str]) -> Callable[[IndexEntry], bool]:
    """A predicate selecting the entries that match any of ``globs``.

    Globs are paths relative to the home directory (a leading ``/`` or ``./`` and a trailing ``/`` are
    ignored), matched component by component and case-sensitively: ``*`` matches any characters within one
    component, ``?`` one character, ``[...]`` one of a set, and a component that is exactly ``**``
    matches any number of components, none included. An entry is selected when a glob matches its path or
    the path of any directory above it, so naming a directory selects everything under it:
    ``notebooks/*.ipynb``, ``thesis`` (= ``thesis/**``), ``**/data.csv``, ``data.csv`` (only at the top).
    The root entry (``.``) is never selected. Raises ValueError for an empty glob list, an empty glob or a
    malformed one (``[z-a]``).
    """
    if not globs:
        raise ValueError("no path globs given")
    compiled = [_compile(g) for g in globs]

    def selected(entry: IndexEntry) -> bool:
        if entry.path == _ROOT:
            return False
        text = os.fsdecode(entry.path)
        end = 0
        while True:
            end = text.find("/", end + 1)
            prefix = text if end < 0 else text[:end]
            if any(rx.fullmatch(prefix) for rx in compiled):
                return True
            if end < 0:
                return False

    return selected


def _compile(glob: str) -> re.Pattern[str]:
    parts = [p for p in glob.strip("/").removeprefix("./").split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"empty path glob {glob!r}")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            if last:
                # "a/**" also matches "a" itself; "**" alone matches every path.
                regex = regex[:-1] + "(?:/.*)?" if regex else ".*"
            else:
                regex += "(?:[^/]+/)*"
        else:
            regex += _component(part) + ("" if last else "/")
    try:
        return re.compile(regex, re.DOTALL)
    except re.error as e:  # e.g. a reversed range, "[z-a]"
        raise ValueError(f"malformed path glob {glob!r}: {e.msg}") from None


def _component(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (close := part.find("]", i + 2)) > 0:
            body = part[i + 1:close]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = close
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
