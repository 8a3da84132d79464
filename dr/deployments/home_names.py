"""Where a hub on one machine keeps its users' homes: the ``deployment.homes`` layout.

A layout is a path template with exactly one placeholder, in one path component:

- ``{username}``: the hub username as it is (``/home/jupyter-{username}``, ``/srv/homes/{username}``);
- ``{tljh_username}``: the system user name The Littlest JupyterHub gives a hub user (below), so that
  ``/home/{tljh_username}`` finds every TLJH home, hashed long names included. ``homes: tljh`` is the
  same as ``homes: /home/{tljh_username}``.

The layout also says which directories are homes at all: a directory is *in the layout* when its path
has the template's fixed parts and any name where the placeholder is (for ``{tljh_username}``: a name
starting ``jupyter-``). Homes in the layout that belong to no hub user are **orphans** (a user deleted
from the hub, whose files are still there); the local deployment backs them up as their own items.

Pure apart from :meth:`HomeLayout.scan`, which lists one directory.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dr.errors import UsageError

TLJH_PRESET = "tljh"
TLJH_TEMPLATE = "/home/{tljh_username}"
PLACEHOLDERS = ("{username}", "{tljh_username}")

#: TLJH's system user names start with this prefix (its UserCreatingSpawner adds it).
TLJH_PREFIX = "jupyter-"


def tljh_system_username(user: str) -> str:
    """The system user name (so the home ``/home/<name>``) that TLJH creates for hub user ``user``.

    TLJH's ``UserCreatingSpawner.start`` calls ``generate_system_username("jupyter-" + user.name)``
    (tljh/user_creating_spawner.py), which keeps a name shorter than 26 characters and otherwise cuts it
    to 26 and appends ``-`` and the first 5 hex digits of the SHA-256 of the whole (UTF-8) name
    (tljh/normalize.py), so that system names stay within 32 characters. Nothing else is changed (TLJH
    does not replace spaces or other characters; ``useradd`` refuses such names, so those users never
    get a home).
    """
    name = TLJH_PREFIX + user
    if len(name) < 26:
        return name
    return f"{name[:26]}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:5]}"


@dataclass(frozen=True)
class HomeLayout:
    """A parsed ``deployment.homes`` template; see the module docstring."""

    template: str  # with the preset resolved
    placeholder: str  # "{username}" or "{tljh_username}"
    base: Path  # the directory whose entries are (or lead to) homes
    prefix: str  # the fixed text before the placeholder in its path component
    suffix: str  # ... and after it
    tail: tuple[str, ...]  # path components after the placeholder's one

    @classmethod
    def parse(cls, homes: str) -> HomeLayout:
        """Parse ``homes``; raises UsageError (naming ``deployment.homes``) when it is not a layout."""
        template = TLJH_TEMPLATE if homes.strip() == TLJH_PRESET else homes
        found = [(p, template.count(p)) for p in PLACEHOLDERS if p in template]
        if not found:
            raise UsageError("deployment.homes: must contain {username}, e.g. /home/jupyter-{username} "
                             "(or {tljh_username}, or be `tljh` for The Littlest JupyterHub)")
        if len(found) > 1 or found[0][1] > 1:
            raise UsageError(f"deployment.homes: {homes!r} must contain exactly one placeholder")
        placeholder = found[0][0]
        parts = Path(os.path.abspath(template)).parts  # relative to the working directory, as before
        at = next(i for i, part in enumerate(parts) if placeholder in part)
        prefix, suffix = parts[at].split(placeholder)
        tail = tuple(parts[at + 1:])
        return cls(template=template, placeholder=placeholder, base=Path(*parts[:at]), prefix=prefix,
                   suffix=suffix, tail=tail)

    def name_of(self, user: str) -> str:
        """What stands for the placeholder for hub user ``user``."""
        return tljh_system_username(user) if self.placeholder == "{tljh_username}" else user

    def home_of(self, user: str) -> Path:
        """The home of hub user ``user``. Raises UsageError for a name that cannot be a directory name."""
        if "/" in user or user in (".", "..", "") or "\0" in user:
            raise UsageError(f"username {user!r} cannot name a home directory")
        return self.base / (self.prefix + self.name_of(user) + self.suffix) / Path(*self.tail)

    def _component(self) -> re.Pattern[str]:
        var = re.escape(TLJH_PREFIX) + ".+" if self.placeholder == "{tljh_username}" else ".+"
        return re.compile(re.escape(self.prefix) + var + re.escape(self.suffix), re.DOTALL)

    def matches(self, path: Path | str) -> bool:
        """Whether ``path`` (absolute, as recorded) is a home directory of this layout (pure)."""
        parts = Path(os.path.normpath(path)).parts
        base = self.base.parts
        n = len(base)
        if len(parts) != n + 1 + len(self.tail) or parts[:n] != base or parts[n + 1:] != self.tail:
            return False
        name = parts[n]
        return name not in (".", "..") and self._component().fullmatch(name) is not None

    def scan(self) -> list[Path]:
        """Every existing directory of this layout, sorted (symlinked entries are not followed: a home is
        a real directory). A base directory that does not exist or cannot be listed holds none."""
        try:
            names = sorted(os.listdir(self.base))
        except OSError:
            return []
        pattern = self._component()
        found = []
        for name in names:
            if not pattern.fullmatch(name):
                continue
            path = self.base / name / Path(*self.tail)
            try:
                if path.is_dir() and not any(p.is_symlink() for p in _chain(self.base / name, path)):
                    found.append(path)
            except OSError:
                continue
        return found


def _chain(first: Path, last: Path) -> list[Path]:
    """``first`` and every path from it down to ``last`` (a descendant of ``first``)."""
    chain = [first]
    for part in last.relative_to(first).parts:
        chain.append(chain[-1] / part)
    return chain
