"""The hub of the season: its users (in a real JupyterHub database, changed through JupyterHub's ORM) and
their homes (real directories), changed the way people change them, at simulated times.

Everything is deterministic: one ``random.Random(seed)`` decides who works when and what they change, and
every file a user writes gets the simulated time as its mtime.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr.archive.walk import is_restore_state
from tests.fixtures.sandbox import Sandbox, small_home
from tests.treeutil import snapshot_tree

UID, GID = 1000, 100
KiB = 1 << 10

Tree = dict[bytes, dict[str, Any]]


def home_tree(home: Path) -> Tree:
    """``snapshot_tree`` of a home without the restore state jdr keeps at its root
    (:func:`dr.archive.walk.is_restore_state`: the exact name, a 0700 directory owned by root)."""
    tree = snapshot_tree(home)
    state = [name for name in os.listdir(home)
             if is_restore_state(os.fsencode(name), os.lstat(home / name))]
    prefixes = tuple(os.fsencode(n) for n in state)
    return {k: v for k, v in tree.items()
            if not any(k == p or k.startswith(p + b"/") for p in prefixes)}


def notebook(sources: list[Any]) -> str:
    """A valid nbformat 4 notebook with one code cell per source (earlier cells are kept as they were)."""
    cells = [c if isinstance(c, dict) else {"id": f"cell-{n}", "cell_type": "code", "execution_count": None,
                                            "metadata": {}, "outputs": [], "source": c}
             for n, c in enumerate(sources)]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


class World:
    """The sandbox hub ``sb`` as a simulated term: users join, leave, are renamed, work and fill homes."""

    def __init__(self, sb: Sandbox, seed: int) -> None:
        self.sb = sb
        self.rng = random.Random(seed)
        self.mounts: list[Path] = []
        self._files: dict[str, int] = {}  # per user: files written so far (names stay unique)
        self._factory: Any = None
        # The sandbox's notebooks are placeholders; drills validate notebooks, so make them real ones.
        for home in self.homes().values():
            for nb in home.rglob("*.ipynb"):
                if nb.is_file() and not nb.is_symlink():
                    st = nb.stat()
                    nb.write_text(notebook([]))
                    os.utime(nb, ns=(st.st_atime_ns, st.st_mtime_ns))

    # --- the hub database (JupyterHub's own ORM) ---------------------------------------------------------

    def _orm(self, change: Any) -> None:
        """Apply ``change(session)`` and commit; no connection stays open between changes (jdr reads the
        database in between, as it would beside a running hub)."""
        if self._factory is None:
            from jupyterhub import orm

            self._factory = orm.new_session_factory(f"sqlite:///{self.sb.hub_db}")  # checks the schema once
        db = self._factory()
        try:
            change(db)
            db.commit()
        finally:
            db.close()
            self._factory.kw["bind"].dispose()

    def users(self) -> list[str]:
        """The hub's users now, as the ``users`` table lists them (read with sqlite3, like an admin would)."""
        conn = sqlite3.connect(f"file:{self.sb.hub_db}?mode=ro", uri=True)
        try:
            return sorted(r[0] for r in conn.execute("SELECT name FROM users"))
        finally:
            conn.close()

    def join(self, name: str, *, home: bool = True) -> None:
        """A new user logs in for the first time: a hub user with a default server, and a home."""
        from jupyterhub import orm

        def add(db: Any) -> None:
            user = orm.User(name=name)
            db.add(user)
            db.flush()
            db.add(orm.Spawner(user=user, name="", state={}))
            user.new_api_token(note=f"token of {name}")

        self._orm(add)
        if home:
            small_home(self.sb.home(name), name, uid=UID, gid=GID)
            nb = self.sb.home(name) / "notebooks" / "work.ipynb"
            nb.write_text(notebook([]))
            os.chown(nb, UID, GID)

    def leave(self, name: str) -> None:
        """An admin deletes the user in the hub; the home directory stays (an orphan) until removed."""
        from jupyterhub import orm

        self._orm(lambda db: db.delete(db.query(orm.User).filter_by(name=name).one()))

    def remove_home(self, name: str) -> None:
        shutil.rmtree(self.sb.home(name))

    def rename(self, old: str, new: str) -> None:
        """An admin renames the user in the hub (admin panel) and moves the home to the new name."""
        from jupyterhub import orm

        def change(db: Any) -> None:
            db.query(orm.User).filter_by(name=old).one().name = new

        self._orm(change)
        os.rename(self.sb.home(old), self.sb.home(new))

    def touch_activity(self, name: str, when: datetime) -> None:
        from jupyterhub import orm

        naive = when.astimezone(UTC).replace(tzinfo=None)  # JupyterHub stores naive UTC

        def change(db: Any) -> None:
            user = db.query(orm.User).filter_by(name=name).one()
            user.last_activity = naive
            for spawner in user._orm_spawners:
                spawner.last_activity = naive

        self._orm(change)

    # --- homes ------------------------------------------------------------------------------------------

    def homes(self) -> dict[str, Path]:
        """Every hub user's home that exists."""
        return {u: self.sb.home(u) for u in self.users() if self.sb.home(u).is_dir()}

    def snapshot(self) -> dict[str, Tree]:
        """What a backup taken now must hold, by volume label: every hub user's home (``alice``) and every
        orphan home, a directory of the layout whose user is gone (``home:<path>``), entry by entry, but
        jdr's own restore state at its root (documented as never archived)."""
        users = set(self.users())
        found: dict[str, Tree] = {}
        for d in sorted((self.sb.root / "home").iterdir()):
            if d.is_symlink() or not d.is_dir() or not d.name.startswith("jupyter-"):
                continue
            name = d.name[len("jupyter-"):]
            found[name if name in users else f"home:{d}"] = home_tree(d)
        return found

    def path_of(self, label: str) -> Path:
        """Where the volume ``label`` (as :meth:`snapshot` names it) lives."""
        return Path(label[len("home:"):]) if label.startswith("home:") else self.sb.home(label)

    def _write(self, user: str, rel: str, data: bytes, when: datetime) -> Path:
        path = self.sb.home(user) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chown(path, UID, GID)
        os.chown(path.parent, UID, GID)
        ts = when.timestamp()
        os.utime(path, (ts, ts))
        return path

    def work(self, user: str, when: datetime) -> str:
        """One working session: edit the notebook, add a data file, sometimes delete an older one."""
        self.touch_activity(user, when)
        home = self.sb.home(user)
        rng = self.rng
        nb = home / "notebooks" / "work.ipynb"
        cells = json.loads(nb.read_text())["cells"] if nb.exists() else []
        cells.append(f"x = {rng.randrange(10**6)}  # {when.isoformat()}")
        self._write(user, "notebooks/work.ipynb", notebook(cells).encode(), when)
        n = self._files[user] = self._files.get(user, 0) + 1
        self._write(user, f"data/day-{n:03d}.bin", rng.randbytes(rng.randrange(1, 40) * KiB), when)
        old = sorted((home / "data").glob("day-*.bin"))
        if len(old) > 4 and rng.random() < 0.5:
            victim = rng.choice(old[:-1])
            victim.unlink()
            return f"{user} worked (and deleted {victim.name})"
        return f"{user} worked"

    def mount_small_home(self, user: str, size: str) -> None:
        """Give ``user`` a home on its own small filesystem (a tmpfs), as a quota'd volume would be."""
        home = self.sb.home(user)
        keep = home.with_name(home.name + ".before-mount")
        os.rename(home, keep)
        home.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(home)], check=True)
        self.mounts.append(home)
        subprocess.run(["cp", "-a", f"{keep}/.", str(home)], check=True)
        shutil.rmtree(keep)

    def fill_home(self, user: str, when: datetime, chunk: int = 64 * KiB) -> int:
        """Write files into ``user``'s home until the disk is full (ENOSPC); return how many fitted."""
        n = 0
        while True:
            try:
                self._write(user, f"results/fill-{n:04d}.bin", self.rng.randbytes(chunk), when)
            except OSError as e:
                if e.errno != 28:  # ENOSPC
                    raise
                (self.sb.home(user) / "results" / f"fill-{n:04d}.bin").unlink(missing_ok=True)
                return n
            n += 1

    def unmount_all(self) -> None:
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(path)], check=False)
        self.mounts.clear()
