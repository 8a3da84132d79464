"""Finding a z2jh release's parts: the hub Deployment, its DB volume and Secret, and the users' PVCs.

Names are discovered, never assumed: the chart prefixes them with ``<release>-`` unless
``fullnameOverride`` is set. Users map to PVCs through the hub's spawner state ``pvc_name`` (KubeSpawner
≥ 7) and the PVCs' ``hub.jupyter.org/username``/``servername`` annotations, never through a name derived
from a username (names depend on the slug scheme). A PVC that maps to no user is backed up under its own
name; a user with no PVC is reported.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

from dr.deployments.base import Volume
from dr.deployments.kubernetes.api import DEPLOYMENTS, PVCS, SECRETS, Kube, Obj
from dr.deployments.kubernetes.hubdb_server import ServerDb, discover_server_db
from dr.deployments.kubernetes.objects import SERVERNAME_ANNOTATION, USERNAME_ANNOTATION, pvc_record
from dr.errors import UsageError
from dr.hubdb.info import DbInfo
from dr.model import volume_key
from dr.settings import KubernetesSettings
from dr.util.timefmt import iso

log = logging.getLogger(__name__)

HUB_UID = 1000


@dataclass(frozen=True)
class Hub:
    """The hub of a release as found in the namespace (``deployment`` is "" when none is installed)."""

    deployment: str
    pod_selector: str = ""  # label selector of the hub's pods
    replicas: int = 1
    db_claim: str = ""
    db_path: str = "/srv/jupyterhub/jupyterhub.sqlite"  # where the DB file is inside a pod mounting db_claim
    secret: str = ""
    uid: int = HUB_UID
    gid: int = HUB_UID
    fs_group: int | None = HUB_UID
    image: str = ""
    db_pvc: dict[str, Any] = field(default_factory=dict)  # pvc_record of the DB claim
    server_db: ServerDb | None = None  # hub.db.type postgres/mysql: no DB claim, the database server instead

    @property
    def db_dir(self) -> str:
        return posixpath.dirname(self.db_path)


def find_hub(kube: Kube, settings: KubernetesSettings, db_url: str = "") -> Hub:
    """The hub Deployment by ``hub_selector`` (and release), with its DB claim (SQLite) or database server
    (``hub.db`` in the hub Secret, or ``db_url``: the setting ``deployment.hub_db_url``) and Secret.

    Raises UsageError when several hub Deployments match, or when the hub keeps its database elsewhere
    than in an SQLite file on a PVC. Returns a Hub with ``deployment=""`` when none exists (a namespace
    prepared for disaster recovery before z2jh is installed).
    """
    selector = settings.hub_selector
    if settings.release:
        selector += f",release={settings.release}"
    found, _ = kube.list(DEPLOYMENTS, label_selector=selector)
    if len(found) > 1:
        names = ", ".join(d["metadata"]["name"] for d in found)
        raise UsageError(f"several hub Deployments match {selector!r} in {kube.namespace}: {names}",
                         hint="set deployment.kubernetes.release (or hub_selector) to pick one")
    if not found:
        # Names then come from the settings, else (restores) from what the run recorded.
        server_db = discover_server_db(kube, settings.hub_secret, db_url)
        return Hub(deployment="", db_claim="" if server_db else settings.hub_db_claim, db_path=settings.hub_db_path,
                   secret=settings.hub_secret, server_db=server_db)
    return hub_from_deployment(found[0], settings, kube, db_url)


def hub_from_deployment(dep: Obj, settings: KubernetesSettings, kube: Kube | None = None, db_url: str = "") -> Hub:
    name = dep["metadata"]["name"]
    spec = dep.get("spec") or {}
    tpl = (spec.get("template") or {}).get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    db_dir = posixpath.dirname(settings.hub_db_path)
    containers = tpl.get("containers") or []
    hub_c = next((c for c in containers if any(m.get("mountPath", "").rstrip("/") == db_dir
                                               for m in c.get("volumeMounts") or [])),
                 containers[0] if containers else {})
    volumes = {v["name"]: v for v in tpl.get("volumes") or []}
    secret = settings.hub_secret or _secret_name(name, hub_c, volumes)
    server_db = discover_server_db(kube, secret, db_url) if kube is not None else None
    claim = "" if server_db else settings.hub_db_claim
    if not claim and not server_db:
        mount = next((m for m in hub_c.get("volumeMounts") or [] if m.get("mountPath", "").rstrip("/") == db_dir),
                     None)
        vol = volumes.get(mount["name"]) if mount else None
        if not vol or not vol.get("persistentVolumeClaim"):
            raise UsageError(f"the hub Deployment {name} keeps no PVC at {db_dir}: jdr backs up hubs whose "
                             "database is an SQLite file on a PVC (z2jh hub.db.type: sqlite-pvc)",
                             hint="set deployment.kubernetes.hub_db_claim and hub_db_path if it lives elsewhere")
        claim = vol["persistentVolumeClaim"]["claimName"]
    psc = tpl.get("securityContext") or {}
    csc = hub_c.get("securityContext") or {}
    uid = int(csc.get("runAsUser", psc.get("runAsUser", HUB_UID)))
    gid = int(csc.get("runAsGroup", psc.get("runAsGroup", uid)))
    fs_group = psc.get("fsGroup")
    db_pvc: dict[str, Any] = {}
    if kube is not None and claim:
        pvc = kube.get_or_none(PVCS, claim)
        db_pvc = pvc_record(pvc) if pvc else {}
    return Hub(deployment=name, pod_selector=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
               replicas=int(spec.get("replicas", 1) or 0), db_claim=claim, db_path=settings.hub_db_path,
               secret=secret, uid=uid, gid=gid, fs_group=int(fs_group) if fs_group is not None else gid,
               image=str(hub_c.get("image", "")), db_pvc=db_pvc, server_db=server_db)


def _secret_name(deployment: str, container: Obj, volumes: dict[str, Obj]) -> str:
    """z2jh mounts the ``hub`` Secret at /usr/local/etc/jupyterhub/secret/; it is named like the Deployment."""
    for m in container.get("volumeMounts") or []:
        vol = volumes.get(m.get("name", "")) or {}
        if vol.get("secret") and m.get("mountPath", "").rstrip("/").endswith("/secret"):
            return str(vol["secret"]["secretName"])
    for e in container.get("env") or []:
        ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
        if ref:
            return str(ref)
    return deployment


def read_secret(kube: Kube, name: str) -> Obj | None:
    return kube.get_or_none(SECRETS, name)


def list_user_pvcs(kube: Kube, settings: KubernetesSettings) -> list[Obj]:
    items, _ = kube.list(PVCS, label_selector=settings.user_selector)
    return [p for p in items if not (p.get("metadata") or {}).get("deletionTimestamp")]


@dataclass
class Mapping:
    volumes: list[Volume]
    warnings: list[str]
    users_without_volume: list[str]


def map_volumes(pvcs: list[Obj], db: DbInfo, running_claims: set[str] = frozenset()) -> Mapping:  # type: ignore[assignment]
    """Join the hub DB's users and servers with the PVCs found (pure; see the module doc).

    The spawner state's ``pvc_name`` wins over annotations; a PVC annotated for a (user, server) that the
    hub maps to another PVC, and a PVC with no annotation, become volumes of no user (``user=None``),
    keyed by claim name.
    """
    by_name = {p["metadata"]["name"]: p for p in pvcs}
    taken: dict[tuple[str, str], str] = {}  # (user, server) -> claim
    claimed: set[str] = set()
    warnings: list[str] = []
    servers = {(s.user, s.server): s for s in db.servers}
    for s in db.servers:
        if s.pvc_name and s.pvc_name in by_name:
            taken[(s.user, s.server)] = s.pvc_name
            claimed.add(s.pvc_name)
        elif s.pvc_name:
            warnings.append(f"{s.label}: the hub remembers PVC {s.pvc_name}, which does not exist "
                            "(it is recreated when the server starts, or by a restore)")
    for name, pvc in sorted(by_name.items()):
        if name in claimed:
            continue
        ann = (pvc.get("metadata") or {}).get("annotations") or {}
        user = ann.get(USERNAME_ANNOTATION)
        ident = (user, ann.get(SERVERNAME_ANNOTATION, "")) if user is not None else None
        if ident is not None and ident not in taken:
            taken[ident] = name
            claimed.add(name)
    volumes: list[Volume] = []
    for (user, server), claim in sorted(taken.items()):
        srv = servers.get((user, server))
        activity = {"started": iso(srv.started) if srv and srv.started else None,
                    "last_activity": iso(srv.last_activity) if srv and srv.last_activity else None}
        running = bool(srv and srv.running) or claim in running_claims
        volumes.append(Volume(key=volume_key(user, server), user=user, server=server,
                              source={"pvc": pvc_record(by_name[claim]), "activity": activity},
                              running=running, last_activity=srv.last_activity if srv else None))
    for name in sorted(set(by_name) - claimed):
        volumes.append(Volume(key=volume_key(None, claim=name), user=None,
                              source={"pvc": pvc_record(by_name[name]), "activity": {}},
                              running=name in running_claims))
        warnings.append(f"PVC {name} maps to no user; it is backed up under its own name")
    with_volume = {u for (u, _s) in taken}
    without = sorted(u for u in db.users if u not in with_volume)
    return Mapping(volumes=volumes, warnings=warnings, users_without_volume=without)


def find_user_pvc(pvcs: list[Obj], user: str, server: str = "") -> Obj | None:
    """The PVC annotated as ``user``'s (``server``'s) volume, if exactly one is."""
    hits = [p for p in pvcs if ((p.get("metadata") or {}).get("annotations") or {}).get(USERNAME_ANNOTATION) == user
            and ((p["metadata"].get("annotations") or {}).get(SERVERNAME_ANNOTATION, "")) == server]
    if len(hits) > 1:
        names = ", ".join(p["metadata"]["name"] for p in hits)
        raise UsageError(f"several PVCs are annotated as the volume of {user!r}"
                         f"{' (server ' + server + ')' if server else ''}: {names}")
    return hits[0] if hits else None
