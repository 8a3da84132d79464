"""The drill port: a scratch place a run is restored into to prove it restores, away from production.

A DR drill (:mod:`dr.operations.drill`) restores a run into a :class:`DrillTarget`, checks what came back,
and throws the place away. The target guarantees that nothing it writes can reach production:

- ``local`` (:class:`LocalDrillTarget`): a scratch directory ``<parent>/jdr-drill-<drill>/`` holding
  ``hub/jupyterhub.sqlite`` and ``home/<user>/``. Archives are extracted with the archive engine directly
  (never through :class:`dr.deployments.local.LocalDeployment`, which knows the production paths), and a
  scratch directory overlapping the production hub DB or homes is refused.
- ``kubernetes`` (``dr.deployments.kubernetes.drill.KubernetesDrillTarget(settings)``): a scratch
  namespace created by jdr, labelled like every object jdr creates (``app.kubernetes.io/managed-by: jdr``,
  ``jdr.hub.jupyter.org/role: drill``, ``jdr.hub.jupyter.org/run: <drill>``; see
  ``dr.deployments.kubernetes.objects.jdr_labels``) and annotated with the drill's holder (pod, start time),
  with its own PVCs restored by mover pods; ``cleanup`` deletes the namespace, ``leftovers`` lists namespaces
  so labelled whose holder pod is gone. It must never create, patch or delete
  anything outside that namespace (cluster-scoped PVs bound to its PVCs excepted, which it deletes).

Every scratch place carries a marker (``.jdr-drill.json`` here, a label there) so that a drill killed before
its clean-up is cleaned up by the next one; nothing unmarked is ever removed. A local drill of a hub on
PostgreSQL/MySQL also makes a scratch database named :func:`dr.hubdb.server.scratch_name` (its name is its
marker); :meth:`LocalDrillTarget.scratch_databases` lists those of other drills, and the drill's sweep
(dr.operations.drill_sweep) drops the ones whose drill is dead by the repository's drill locks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from dr.archive.index import load_index
from dr.archive.reader import extract_archive
from dr.errors import DeploymentError, IntegrityError, JdrError, UsageError
from dr.hubdb.info import DbInfo
from dr.hubdb.server import ServerHubDb, scratch_drill, scratch_name
from dr.model import IndexEntry, VolumeItem
from dr.repository.artifacts import drain
from dr.repository.repository import Repository
from dr.util.procs import pid_alive
from dr.util.testhooks import pause_at
from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)

MARKER = ".jdr-drill.json"
MARKER_FORMAT = "jdr-drill-scratch"
SCRATCH_PREFIX = "jdr-drill-"
NOTEBOOK_SAMPLE = 20


@dataclass(frozen=True)
class RestoredVolume:
    """One volume restored into the scratch place (every file already checked against the index)."""

    target: str  # where (a path, or ``namespace/pvc``)
    files: int  # regular files written (hard links not counted)
    bytes: int  # bytes of file content written
    index_files: int  # regular files and hard links the index lists


@dataclass(frozen=True)
class VolumeCheck:
    """What :meth:`DrillTarget.verify_volume` found in a restored volume."""

    files_on_disk: int  # regular files (hard links included) found in the restored tree
    notebooks_checked: int = 0
    notebooks_total: int = 0  # ``*.ipynb`` files present (the sample is taken from these)
    validator: str = "json"  # "nbformat <version>" when nbformat validated, else "json"
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubCheck:
    """Whether a real hub started on the restored database and answered."""

    status: Literal["ok", "failed", "skipped"]
    note: str = ""
    version: str = ""
    users: tuple[str, ...] = ()  # users the running hub listed through its API


@dataclass(frozen=True)
class Leftover:
    """The scratch place of an earlier drill that never cleaned up (killed, or the machine died)."""

    where: str
    drill: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class DrillTarget(Protocol):
    """A scratch place to restore a run into. Methods are called in this order: ``leftovers`` /
    ``remove_leftover``, ``prepare``, ``restore_hub_db``, then ``restore_volume`` and ``verify_volume`` per
    volume, optionally ``start_hub``, and ``cleanup`` — always, also after a failure."""

    kind: str

    def leftovers(self) -> list[Leftover]:
        """Scratch places of earlier drills that are no longer running (marked ones only)."""
        ...

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one scratch place :meth:`leftovers` returned (and anything it still runs)."""
        ...

    def prepare(self, drill: str) -> str:
        """Create this drill's empty scratch place, marked as such; returns where it is."""
        ...

    def restore_hub_db(self, fetch: Callable[[Path], DbInfo]) -> DbInfo:
        """Put the run's hub database into the scratch place. ``fetch(dest)`` downloads it to a local file
        and checks it (raising on any mismatch); returns what it found."""
        ...

    def restore_volume(self, repo: Repository, item: VolumeItem) -> RestoredVolume:
        """Restore one volume of the run, checking every file against the index. Raises on any mismatch."""
        ...

    def verify_volume(self, item: VolumeItem, restored: RestoredVolume,
                      notebooks: int = NOTEBOOK_SAMPLE) -> VolumeCheck:
        """Count the restored files and check a sample of up to ``notebooks`` notebooks (JSON, nbformat)."""
        ...

    def start_hub(self, timeout: float = 60.0) -> HubCheck:
        """Start a real hub on the restored database inside the scratch place, check that its API answers,
        and stop it. ``skipped`` (with the reason) where that cannot be done."""
        ...

    def cleanup(self, keep: bool = False) -> None:
        """Remove the scratch place and everything in it (idempotent); with ``keep``, leave it and mark it
        kept, so that later drills do not take it for a leftover."""
        ...

    @property
    def where(self) -> str:
        """The scratch place (after :meth:`prepare`), for reports and ``--keep``."""
        ...


@runtime_checkable
class ScratchDatabases(Protocol):
    """A drill target that makes scratch databases on a database server (besides its scratch place)."""

    def scratch_databases(self) -> list[Leftover]:
        """Every scratch database on the server but this drill's own and those of kept (``--keep``) drills,
        each a Leftover with ``drill`` set and ``details["database"]``: candidates that the sweep keeps or
        removes (with :meth:`DrillTarget.remove_leftover`) by the drills' locks."""
        ...


# --- checks that work on any restored tree -----------------------------------------------------------


def nbformat_validator() -> tuple[Callable[[dict[str, Any]], None] | None, str]:
    """``(validate, "nbformat <version>")`` when nbformat is importable, else ``(None, "json")``."""
    try:
        import nbformat  # optional dependency
    except ImportError:
        return None, "json"

    def validate(doc: dict[str, Any]) -> None:
        nbformat.validate(doc)

    return validate, f"nbformat {getattr(nbformat, '__version__', '?')}"


def check_tree(root: Path, notebooks: int = NOTEBOOK_SAMPLE) -> VolumeCheck:
    """Count regular files under ``root`` (symlinks never followed) and check up to ``notebooks``
    ``*.ipynb`` files, in path order: each must parse as a JSON object and, if nbformat is importable,
    pass ``nbformat.validate``. Problems name the notebook, relative to ``root``."""
    validate, validator = nbformat_validator()
    files = 0
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_symlink() and path.is_file():
                files += 1
                if name.endswith(".ipynb"):
                    found.append(path)
    problems: list[str] = []
    checked = found[:notebooks] if notebooks >= 0 else found
    for path in checked:
        rel = path.relative_to(root)
        try:
            doc = json.loads(path.read_bytes())
        except (ValueError, OSError) as e:
            problems.append(f"notebook {rel}: not JSON ({e})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"notebook {rel}: not a JSON object")
            continue
        if validate is not None:
            try:
                validate(doc)
            except Exception as e:  # nbformat raises ValidationError and others; each is a finding
                problems.append(f"notebook {rel}: not a valid notebook ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''})")
    return VolumeCheck(files_on_disk=files, notebooks_checked=len(checked), notebooks_total=len(found),
                       validator=validator, problems=tuple(problems))


def index_file_count(index: dict[bytes, IndexEntry]) -> int:
    return sum(1 for e in index.values() if e.type in ("file", "hardlink"))


# --- local ------------------------------------------------------------------------------------------


def _inside(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


def homes_base(template: str) -> Path | None:
    """The fixed directory part of a homes template (``/home`` for ``/home/jupyter-{username}`` and for
    ``tljh``); None when ``template`` is not a homes layout."""
    from dr.deployments.home_names import HomeLayout
    from dr.errors import UsageError

    try:
        return Path(os.path.abspath(HomeLayout.parse(template).base))
    except UsageError:
        return None


class LocalDrillTarget:
    """A :class:`DrillTarget` in a scratch directory on this machine.

    ``parent``: where scratch directories are made (``drill.scratch``; default the system temporary
    directory). ``production``: the production hub DB and homes template, which the scratch directory must
    not overlap. ``server_db``: the production hub DB when it lives on PostgreSQL/MySQL: a run's dump is
    restored into a new scratch database beside it (``jdr_drill_<drill>``, made with the hub user's
    credentials, which need the right to create databases) and that database is dropped at cleanup.
    """

    kind = "local"

    def __init__(self, parent: Path | None = None, *, production_hub_db: str = "",
                 production_homes: str = "", hub_command: Sequence[str] | None = None,
                 server_db: ServerHubDb | None = None) -> None:
        self.parent = Path(os.path.abspath(parent or tempfile.gettempdir()))
        self._production: list[Path] = []
        if production_hub_db:
            self._production.append(Path(os.path.abspath(production_hub_db)).parent)
        base = homes_base(production_homes) if production_homes else None
        if base is not None:
            self._production.append(base)
        self.hub_command = list(hub_command) if hub_command else [sys.executable, "-m", "jupyterhub"]
        self.root: Path | None = None
        self.db_path: Path | None = None
        self.server_db = server_db
        self.scratch_db: ServerHubDb | None = None  # the drill's own database on the server, once made
        self._marker: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return str(self.root) if self.root else str(self.parent)

    # --- leftovers -------------------------------------------------------------------------------

    def leftovers(self) -> list[Leftover]:
        found: list[Leftover] = []
        try:
            entries = sorted(self.parent.iterdir())
        except OSError:
            return []
        host = socket.gethostname()
        for path in entries:
            if not path.name.startswith(SCRATCH_PREFIX) or path == self.root or path.is_symlink():
                continue
            marker = _read_marker(path)
            if marker is None:
                continue  # not ours: never touched
            if marker.get("kept"):
                continue  # kept on purpose (--keep): the administrator removes it
            if marker.get("host") != host:
                continue  # cannot tell whether that drill still runs
            if pid_alive(int(marker.get("pid", 0) or 0)):
                continue
            found.append(Leftover(where=str(path), drill=str(marker.get("drill", "")), details=marker))
        return found

    def scratch_databases(self) -> list[Leftover]:
        if self.server_db is None:
            return []
        own = self.scratch_db.url.database if self.scratch_db is not None else None
        kept = self._kept_databases()
        found = []
        for name in self.server_db.list_scratch():
            drill = scratch_drill(name)
            if drill is None or name == own or name in kept:
                continue  # not a name jdr makes; this drill's; kept on purpose
            found.append(Leftover(where=f"database {self.server_db.scratch(name).url.redacted()}", drill=drill,
                                  details={"database": name}))
        return found

    def _kept_databases(self) -> set[str]:
        try:
            entries = sorted(self.parent.iterdir())
        except OSError:
            return set()
        kept = set()
        for path in entries:
            if path.name.startswith(SCRATCH_PREFIX) and not path.is_symlink():
                marker = _read_marker(path)
                if marker and marker.get("kept") and marker.get("scratch_db"):
                    kept.add(str(marker["scratch_db"]))
        return kept

    def remove_leftover(self, leftover: Leftover) -> None:
        database = leftover.details.get("database")
        if database:
            if self.server_db is None or scratch_drill(str(database)) is None:
                raise DeploymentError(f"{leftover.where} is not a jdr drill's scratch database; refusing to drop it")
            self.server_db.scratch(str(database)).drop()
            log.warning("dropped the scratch database %s of drill %s, which never cleaned up", database,
                        leftover.drill)
            return
        path = Path(leftover.where)
        marker = _read_marker(path)
        if marker is None:
            raise DeploymentError(f"{path} carries no jdr drill marker; refusing to remove it")
        hub_pid = int(marker.get("hub_pid", 0) or 0)
        if hub_pid and pid_alive(hub_pid) and _cmdline_mentions(hub_pid, str(path)):
            log.warning("stopping the hub that drill %s left running (pid %d)", leftover.drill, hub_pid)
            with contextlib.suppress(OSError):
                os.killpg(hub_pid, signal.SIGKILL)
        _rmtree(path)
        log.info("removed the scratch directory %s of drill %s, which never cleaned up", path, leftover.drill)

    # --- the drill ---------------------------------------------------------------------------------

    def prepare(self, drill: str) -> str:
        root = self.parent / f"{SCRATCH_PREFIX}{drill}"
        for prod in self._production:
            if _inside(root, prod) or _inside(prod, root):
                raise UsageError(f"drill.scratch: {root} overlaps the production directory {prod}",
                                 hint="choose a scratch directory outside the hub's and the homes' directories")
        self.parent.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o700)
        self.root = root
        self._marker = {"format": MARKER_FORMAT, "drill": drill, "pid": os.getpid(),
                        "host": socket.gethostname(), "started": iso(utcnow())}
        self._write_marker()
        (root / "hub").mkdir()
        (root / "home").mkdir()
        return str(root)

    def restore_hub_db(self, fetch: Callable[[Path], DbInfo]) -> DbInfo:
        root = self._root()
        dump = root / "hub" / "jupyterhub.dump"
        info = fetch(dump)
        if info.dump_format == "sqlite":
            self.db_path = root / "hub" / "jupyterhub.sqlite"
            dump.rename(self.db_path)
            return info
        if self.server_db is None or self.server_db.dump_format != info.dump_format:
            raise UsageError(f"the run's hub database is a {info.kind} dump; a drill restores it into a scratch "
                             "database on the hub's database server, and deployment.hub_db_url names none of "
                             "that kind")
        name = scratch_name(str(self._marker.get("drill", "x")))
        self.scratch_db = self.server_db.create_scratch(name)
        self._marker["scratch_db"] = name
        self._write_marker()
        pause_at("drill-scratch-db")  # tests kill the drill here (tests/e2e/test_local_hubdb_server.py)
        self.scratch_db.restore(dump)
        restored = self.scratch_db.inspect()
        if sorted(restored.users) != sorted(info.users):
            raise IntegrityError(f"the restored hub database has {len(restored.users)} users; the run "
                                 f"recorded {len(info.users)}")
        return restored

    def home(self, item: VolumeItem) -> Path:
        """``home/<user>`` (``home/<user>:<server>`` for a named server; the volume key where a name
        cannot be a directory name)."""
        name = item.label if item.user is not None else item.key
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            name = item.key
        return self._root() / "home" / name

    def restore_volume(self, repo: Repository, item: VolumeItem) -> RestoredVolume:
        if item.archive is None or item.index is None:
            raise DeploymentError(f"{item.label}: the run holds no archive of this volume")
        dest = self.home(item)
        dest.mkdir(mode=0o700)
        with repo.open_artifact(item.index) as raw:
            index = load_index(raw)
            drain(raw)
        with repo.open_artifact(item.archive) as archive:
            stats = extract_archive(archive, dest, index=index)
            drain(archive)  # the artifact's own checksum is checked at its end
        return RestoredVolume(target=str(dest), files=stats.files, bytes=stats.bytes,
                              index_files=index_file_count(index))

    def verify_volume(self, item: VolumeItem, restored: RestoredVolume,
                      notebooks: int = NOTEBOOK_SAMPLE) -> VolumeCheck:
        check = check_tree(Path(restored.target), notebooks)
        if check.files_on_disk != restored.index_files:
            return VolumeCheck(
                files_on_disk=check.files_on_disk, notebooks_checked=check.notebooks_checked,
                notebooks_total=check.notebooks_total, validator=check.validator,
                problems=(f"{check.files_on_disk} files restored, the index lists {restored.index_files}",
                          *check.problems))
        return check

    def start_hub(self, timeout: float = 60.0) -> HubCheck:
        import importlib.util

        if self.scratch_db is not None:
            return HubCheck("skipped", "a hub is not started on a scratch PostgreSQL/MySQL database (the "
                                       "restore, the schema and user checks ran)")
        if self.db_path is None or not self.db_path.exists():
            return HubCheck("skipped", "no restored hub database to start a hub on")
        if self.hub_command[1:3] == ["-m", "jupyterhub"] and importlib.util.find_spec("jupyterhub") is None:
            return HubCheck("skipped", "jupyterhub is not installed here; install it to start a hub in drills")
        return _run_scratch_hub(self, timeout)

    def cleanup(self, keep: bool = False) -> None:
        if self.scratch_db is not None and not keep:
            try:
                self.scratch_db.drop()
                log.info("dropped the drill's scratch database %s", self.scratch_db.url.redacted())
            except JdrError as e:
                log.error("could not drop the drill's scratch database %s: %s", self.scratch_db.url.redacted(), e)
        if keep:
            if self.root is not None and self.root.exists():
                self._marker["kept"] = True
                self._write_marker()
            return
        if self.root is not None and self.root.exists():
            _rmtree(self.root)
            log.info("removed the drill scratch directory %s", self.root)

    # --- internals ---------------------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise DeploymentError("the drill's scratch directory has not been prepared")
        return self.root

    def _write_marker(self) -> None:
        root = self._root()
        tmp = root / (MARKER + ".tmp")
        tmp.write_text(json.dumps(self._marker, indent=1))
        os.replace(tmp, root / MARKER)

    def _remember_hub(self, pid: int) -> None:
        self._marker["hub_pid"] = pid
        self._write_marker()


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MARKER_FORMAT:
        return None
    return doc


def _cmdline_mentions(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        # Restored trees may hold read-only directories (modes come from the archive).
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    shutil.rmtree(path, onerror=onerror)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


# --- a real hub on the restored database --------------------------------------------------------------

_HUB_CONFIG = """\
# Written by jdr drill: a hub on a restored database, in a scratch directory, on loopback only.
# It admits nobody: every login is refused, no user is made an admin, and no server can be spawned (the
# restored database holds production's users, admins and tokens; this hub must not act on them).
from jupyterhub.auth import Authenticator
from jupyterhub.proxy import Proxy
from jupyterhub.spawner import Spawner


class NobodyAuthenticator(Authenticator):
    \"\"\"Refuses every login, whatever the name and password.\"\"\"

    allow_all = False

    async def authenticate(self, handler, data):
        return None

    def check_allowed(self, username, authentication=None):
        return False


class NoSpawner(Spawner):
    \"\"\"Spawns nothing: a drill's hub only proves it starts on the restored database.\"\"\"

    async def start(self):
        raise RuntimeError("a jdr drill's hub spawns no servers")

    async def stop(self, now=False):
        return None

    async def poll(self):
        return 0


class DrillProxy(Proxy):
    \"\"\"No configurable-http-proxy: routes are remembered, nothing is proxied.\"\"\"

    should_start = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._routes = {{}}

    async def add_route(self, routespec, target, data):
        self._routes[routespec] = {{"routespec": routespec, "target": target, "data": data}}

    async def delete_route(self, routespec):
        self._routes.pop(routespec, None)

    async def get_all_routes(self):
        return dict(self._routes)


c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.upgrade_db = True
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.pid_file = {pid_file!r}
c.JupyterHub.proxy_class = DrillProxy
c.JupyterHub.authenticator_class = NobodyAuthenticator
c.Authenticator.admin_users = set()
c.Authenticator.allowed_users = set()
c.JupyterHub.spawner_class = NoSpawner
c.JupyterHub.cleanup_servers = False
c.JupyterHub.services = [{{"name": "jdr-drill", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "jdr-drill", "scopes": ["list:users", "read:users"],
                             "services": ["jdr-drill"]}}]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http URL built here
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
        return json.loads(r.read() or b"null")


def _run_scratch_hub(target: LocalDrillTarget, timeout: float) -> HubCheck:
    root = target._root()
    assert target.db_path is not None
    workdir = root / "hub-run"
    workdir.mkdir(exist_ok=True)
    token = secrets.token_hex(32)
    hub_port = _free_port()
    config = workdir / "jupyterhub_config.py"
    config.write_text(_HUB_CONFIG.format(
        proxy_port=_free_port(), hub_port=hub_port, db_url=f"sqlite:///{target.db_path}",
        cookie_secret=str(workdir / "jupyterhub_cookie_secret"), pid_file=str(workdir / "jupyterhub.pid"),
        token=token))
    log_path = workdir / "jupyterhub.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([*target.hub_command, "-f", str(config)], cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    target._remember_hub(proc.pid)
    url = f"http://127.0.0.1:{hub_port}/hub/api"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                return HubCheck("failed", f"jupyterhub exited with {proc.returncode}: {_tail(log_path)}")
            try:
                info = _get_json(url + "/")
                break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                return HubCheck("failed", f"jupyterhub did not answer within {timeout:.0f}s: {_tail(log_path)}")
            time.sleep(0.2)
        pause_at("drill-hub-up")  # tests log in here (tests/security/test_surface_drill_hub.py)
        version = str((info or {}).get("version", "")) if isinstance(info, dict) else ""
        try:
            users = _get_json(url + "/users", token)
        except (urllib.error.URLError, OSError, ValueError) as e:
            return HubCheck("failed", f"the hub answered /hub/api but not /hub/api/users: {e}", version)
        names = tuple(sorted(str(u.get("name")) for u in users)) if isinstance(users, list) else ()
        return HubCheck("ok", f"jupyterhub {version} answered on 127.0.0.1:{hub_port}", version, names)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _tail(path: Path, chars: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""
