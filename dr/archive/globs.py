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


def exact_matcher(paths: Sequence[str | bytes]) -> Callable[[IndexEntry], bool]:
    """A predicate selecting the entries whose path is exactly one of ``paths`` (index paths: bytes, or
    str encoded as names are, surrogateescape), or lies under one of them: naming a directory selects
    everything under it. Nothing is a wildcard (``*``, ``[`` are plain characters). The root entry is
    never selected. Raises ValueError for an empty list, an empty path, or one that is absolute or has a
    ``.``/``..`` component (no client-supplied path reaches the disk unchecked)."""
    if not paths:
        raise ValueError("no paths given")
    wanted: set[bytes] = set()
    for p in paths:
        raw = p if isinstance(p, bytes) else os.fsencode(p)
        parts = raw.split(b"/")
        if not raw or raw.startswith(b"/") or any(c in (b"", b".", b"..") for c in parts) or b"\0" in raw:
            raise ValueError(f"not a path of the index: {p!r}")
        wanted.add(raw)

    def selected(entry: IndexEntry) -> bool:
        path = entry.path
        if path == _ROOT:
            return False
        while True:
            if path in wanted:
                return True
            cut = path.rfind(b"/")
            if cut < 0:
                return False
            path = path[:cut]

    return selected


def _compile(glob: str) -> re.Pattern[str]:
    """The regular expression of one glob. Built so that matching time stays polynomial whatever the
    glob (``*****x``, ``**/a/**/a/**/b``): runs of ``*`` and of ``**`` collapse, and every wildcard but
    the last of a component (or every ``**`` but the last of the glob) is matched atomically at the
    earliest place it fits, as CPython's fnmatch does — which finds a match whenever there is one,
    since what follows each such wildcard matches a fixed number of characters (components)."""
    parts = [p for p in glob.strip("/").removeprefix("./").split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"empty path glob {glob!r}")
    segments: list[list[str]] = [[]]  # components between ``**``s
    for i, part in enumerate(parts):
        if part == "**":
            if i == 0 or parts[i - 1] != "**":
                segments.append([])
        else:
            segments[-1].append(_component(part))
    regex = "/".join(segments[0])
    for i, segment in enumerate(segments[1:], start=1):
        body = "/".join(segment)
        sep = "/" if regex else ""
        if i == len(segments) - 1 and not body:
            # "a/**" also matches "a" itself; "**" alone matches every path.
            regex = regex + "(?:/.*)?" if regex else ".*"
        elif i == len(segments) - 1:
            regex += sep + "(?:[^/]+/)*" + body
        else:
            regex += sep + "(?>(?:[^/]+/)*?" + body + r"(?=/|\Z))"
    try:
        return re.compile(regex, re.DOTALL)
    except re.error as e:  # e.g. a reversed range, "[z-a]"
        raise ValueError(f"malformed path glob {glob!r}: {e.msg}") from None


_STAR = object()


def _component(part: str) -> str:
    tokens: list[object] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            if not tokens or tokens[-1] is not _STAR:
                tokens.append(_STAR)
        elif c == "?":
            tokens.append("[^/]")
        elif c == "[" and (close := part.find("]", i + 2)) > 0:
            body = part[i + 1:close]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            tokens.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = close
        else:
            tokens.append(re.escape(c))
        i += 1
    # Pieces between stars: the first is anchored at the start, the last (after the last star) is
    # matched greedily up to the component's end, the ones between atomically at their earliest place.
    pieces: list[str] = [""]
    for t in tokens:
        if t is _STAR:
            pieces.append("")
        else:
            pieces[-1] += str(t)
    if len(pieces) == 1:
        return pieces[0]
    middle = "".join(f"(?>[^/]*?{p})" for p in pieces[1:-1] if p)
    return pieces[0] + middle + "[^/]*" + pieces[-1]
