"""A sandbox hub for ``jdr demo`` (and for trying jdr out): a real JupyterHub database made by
JupyterHub's own ORM, and home directories with notebooks and data. Needs the ``jupyterhub`` package
(``pip install 'jdr[demo]'``)."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from dr.errors import UsageError
from dr.util.timefmt import utcnow

DEMO_USERS = ("alice", "bob", "carol@example.com", "Émile")


@dataclass(frozen=True)
class Sandbox:
    root: Path
    hub_db: Path
    homes: str  # template
    repository: Path
    users: tuple[str, ...]

    def home(self, user: str) -> Path:
        return Path(self.homes.format(username=user))

    def config_text(self) -> str:
        return (f"deployment:\n  kind: local\n  hub_db: {self.hub_db}\n  homes: {self.homes}\n"
                f"repository: file://{self.repository}\n"
                "retention: {keep_last: 7, keep_daily: 14}\n")


def make_hub_db(path: Path, users: tuple[str, ...]) -> None:
    try:
        from jupyterhub import orm
    except ImportError as e:
        raise UsageError("jdr demo needs the jupyterhub package to build a real hub database",
                         hint="pip install 'jdr[demo]'") from e
    from dr.util.logconfig import keep_logging_config

    with keep_logging_config():  # alembic's INFO lines must not leak into jdr's output
        factory = orm.new_session_factory(f"sqlite:///{path}")
    db = factory()
    try:
        # As JupyterHub.init_db does: tokens the hub issues belong to its own OAuth client.
        db.add(orm.OAuthClient(identifier="jupyterhub", secret="", redirect_uri="", description="JupyterHub"))
        db.commit()
        now = utcnow().replace(tzinfo=None)  # JupyterHub stores naive UTC
        for i, name in enumerate(users):
            user = orm.User(name=name, admin=(i == 0), last_activity=now - timedelta(hours=i))
            db.add(user)
            db.flush()
            db.add(orm.Spawner(user=user, name="", state={}, last_activity=now - timedelta(hours=i)))
            user.new_api_token(note="demo token")
        db.commit()
    finally:
        db.close()
        factory.kw["bind"].dispose()


def _notebook(title: str, cells: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "markdown", "id": f"c{seed}-0", "metadata": {}, "source": [f"# {title}"]}] + [
            {"cell_type": "code", "id": f"c{seed}-{k}", "metadata": {}, "execution_count": k,
             "outputs": [], "source": [f"x = {rng.random():.6f} * {k}\n", "print(x)"]}
            for k in range(1, cells + 1)],
    }


def make_home(home: Path, user: str, seed: int) -> None:
    rng = random.Random(seed)
    (home / "notebooks").mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(exist_ok=True)
    (home / ".config" / "empty").mkdir(parents=True, exist_ok=True)
    (home / "notebooks" / "thesis.ipynb").write_text(json.dumps(_notebook(f"{user}'s thesis", 30, seed)))
    (home / "notebooks" / "scratch.ipynb").write_text(json.dumps(_notebook("scratch", 5, seed + 1)))
    rows = "\n".join(f"{i},{rng.random():.5f},{rng.randint(0, 1000)}" for i in range(20000))
    (home / "data" / "measurements.csv").write_text("id,value,count\n" + rows + "\n")
    (home / "data" / "raw.bin").write_bytes(rng.randbytes(2 << 20))
    (home / "README.md").write_text(f"{user}'s home\n")
    os.symlink("notebooks/thesis.ipynb", home / "latest.ipynb")
    os.link(home / "data" / "measurements.csv", home / "data" / "measurements-link.csv")
    if os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(home):
            for name in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), 1000, 100)
        os.lchown(home, 1000, 100)


def create_sandbox(root: Path, users: tuple[str, ...] = DEMO_USERS) -> Sandbox:
    root.mkdir(parents=True, exist_ok=True)
    hub_dir = root / "hub"
    hub_dir.mkdir(exist_ok=True)
    sandbox = Sandbox(root=root, hub_db=hub_dir / "jupyterhub.sqlite",
                      homes=str(root / "home" / "jupyter-{username}"), repository=root / "backups",
                      users=users)
    make_hub_db(sandbox.hub_db, users)
    for i, user in enumerate(users):
        make_home(sandbox.home(user), user, seed=i + 1)
    (root / "jdr.yaml").write_text(sandbox.config_text())
    return sandbox
