"""Pure builders of the Kubernetes objects jdr creates, and of the records it keeps of the ones it backs up.

Everything returns or takes plain JSON dicts (the API's camelCase shape); nothing here talks to a cluster,
so every object is tested as a dict (tests/unit/test_k8s_objects.py).

Every object jdr creates carries ``app.kubernetes.io/managed-by: jdr``, ``jdr.hub.jupyter.org/run`` (the
backup run, or the restore operation's id) and ``jdr.hub.jupyter.org/role``, so that leftovers of a run
that died can be found and removed by label.

Security of mover pods (the trade-off, per purpose):

- ``reader`` (backup movers): uid 0 with every capability dropped except ``DAC_READ_SEARCH``, the volume
  mounted read-only, a read-only root filesystem. Reading *every* user's files (a user may ``chmod 600``
  or create files as another uid) needs either that capability or full root. The obvious alternative,
  uid 1000 plus an added capability, does not work: Kubernetes adds capabilities to the bounding set only,
  and a non-root process gets no effective capabilities without ambient ones (kubernetes/kubernetes#56374),
  so such a mover would silently fail on any file that uid 1000/gid 100 cannot read.
- ``writer`` (restore movers): uid 0 with ``CHOWN``, ``DAC_OVERRIDE``, ``FOWNER``, ``FSETID`` only — what
  putting back numeric owners, modes (setgid directories included) and times needs. These four are in
  Pod Security Standards' *baseline* set; ``DAC_READ_SEARCH`` is not, so namespaces that enforce *baseline*
  refuse backup movers (the API answers 403 naming the policy) unless jdr's namespace is exempted.
- ``as-user`` (the hub DB movers): the hub's own uid/gid/fsGroup, read from the hub Deployment, no
  capabilities: the DB files stay owned exactly as the hub owns them, with no chown needed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from dr.errors import ConfigError
from dr.settings import Settings

Obj = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "jdr.hub.jupyter.org/run"
ROLE_LABEL = "jdr.hub.jupyter.org/role"
PURPOSE_LABEL = "jdr.hub.jupyter.org/purpose"  # of a mover: backup, restore, hub-capture, hub-restore
KEY_ANNOTATION = "jdr.hub.jupyter.org/volume-key"
#: When jdr last wrote into a PVC (a restore): the next backup reads such a volume again even though no
#: server ran, since activity in the hub DB cannot show a restore.
RESTORED_ANNOTATION = "jdr.hub.jupyter.org/restored-at"
USERNAME_ANNOTATION = "hub.jupyter.org/username"
SERVERNAME_ANNOTATION = "hub.jupyter.org/servername"

DATA_MOUNT = "/data"
SOURCE_MOUNT = "/source"
RESULT_PATH = "/dev/termination-log"

#: Annotations that describe a PVC's binding to its current PV; not carried over to a recreated PVC.
_BINDING_ANNOTATIONS = re.compile(r"^(pv\.kubernetes\.io/|volume\.kubernetes\.io/|volume\.beta\.kubernetes\.io/|"
                                  r"kubectl\.kubernetes\.io/last-applied-configuration$)")


def jdr_labels(run: str, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**(extra or {}), MANAGED_BY: "jdr", RUN_LABEL: run, ROLE_LABEL: role}


def run_selector(run: str | None = None) -> str:
    """Label selector of jdr's objects (of one run, or of every run)."""
    return f"{MANAGED_BY}=jdr" + (f",{RUN_LABEL}={run}" if run else "")


def short_name(prefix: str, *parts: str, limit: int = 63) -> str:
    """A DNS-1123 name: ``prefix-<readable>-<hash of parts>``, at most ``limit`` characters."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", parts[-1].lower()).strip("-") if parts else ""
    room = limit - len(prefix) - len(digest) - 2
    readable = readable[:max(room, 0)].strip("-")
    return "-".join(p for p in (prefix, readable, digest) if p)


def run_token(run: str) -> str:
    """The short, unique tail of a run id (``20261125T191440Z-a1b2c3`` → ``191440z-a1b2c3``)."""
    return run.lower().split("t", 1)[-1] if "t" in run.lower() else run.lower()


# --- records of what is backed up -------------------------------------------------------------------


def pvc_record(pvc: Obj) -> Obj:
    """What a restore needs to recreate ``pvc`` from the repository alone (``Volume.source["pvc"]``)."""
    md = pvc.get("metadata") or {}
    spec = pvc.get("spec") or {}
    annotations = {k: v for k, v in (md.get("annotations") or {}).items() if not _BINDING_ANNOTATIONS.match(k)}
    return {
        "name": md.get("name", ""),
        "uid": md.get("uid", ""),
        "labels": dict(md.get("labels") or {}),
        "annotations": annotations,
        "storageClassName": spec.get("storageClassName") or "",
        "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
        "size": ((spec.get("resources") or {}).get("requests") or {}).get("storage", ""),
        "volumeMode": spec.get("volumeMode") or "Filesystem",
        "volumeName": spec.get("volumeName") or "",
    }


def secret_record(secret: Obj) -> Obj:
    """A Secret as stored in the repository: metadata that matters to Helm, type and data."""
    md = secret.get("metadata") or {}
    annotations = {k: v for k, v in (md.get("annotations") or {}).items() if not _BINDING_ANNOTATIONS.match(k)}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": md.get("name", ""), "labels": dict(md.get("labels") or {}),
                         "annotations": annotations},
            "type": secret.get("type") or "Opaque", "data": dict(secret.get("data") or {})}


# --- objects jdr creates --------------------------------------------------------------------------------


def make_pvc(record: Obj, *, name: str | None = None, storage_class: str = "", snapshot: str | None = None,
             source_pvc: str | None = None, size: str | None = None, labels: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None) -> Obj:
    """A PVC shaped like ``record`` (from :func:`pvc_record`), optionally populated from a VolumeSnapshot.

    The recorded labels and annotations are kept (KubeSpawner and Helm recognise their PVCs by them);
    ``labels``/``annotations`` are added on top. ``volumeName`` is never carried over: the old PV is gone
    or still bound to the old claim.
    """
    spec: Obj = {
        "accessModes": list(record.get("accessModes") or ["ReadWriteOnce"]),
        "resources": {"requests": {"storage": size or record.get("size") or "1Gi"}},
        "volumeMode": record.get("volumeMode") or "Filesystem",
    }
    sc = record.get("storageClassName") or storage_class
    if sc:
        spec["storageClassName"] = sc
    if snapshot:
        spec["dataSource"] = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot}
    elif source_pvc:
        spec["dataSource"] = {"kind": "PersistentVolumeClaim", "name": source_pvc}
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name or record["name"],
                     "labels": {**(record.get("labels") or {}), **(labels or {})},
                     "annotations": {**(record.get("annotations") or {}), **(annotations or {})}},
        "spec": spec,
    }


def make_volume_snapshot(name: str, pvc: str, *, snapshot_class: str, labels: dict[str, str],
                         annotations: dict[str, str] | None = None) -> Obj:
    spec: Obj = {"source": {"persistentVolumeClaimName": pvc}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = snapshot_class
    md: Obj = {"name": name, "labels": dict(labels)}
    if annotations:
        md["annotations"] = dict(annotations)
    return {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": md, "spec": spec}


def make_secret_copy(record: Obj, name: str, labels: dict[str, str]) -> Obj:
    """A copy of a Secret under a new name (the safety copy kept before a Secret is replaced)."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": dict(labels),
                         "annotations": {"jdr.hub.jupyter.org/copy-of": record["metadata"]["name"]}},
            "type": record.get("type") or "Opaque", "data": dict(record.get("data") or {})}


@dataclass(frozen=True)
class Mount:
    claim: str
    path: str
    read_only: bool = True


@dataclass(frozen=True)
class Security:
    """How a mover runs (see the module doc): ``reader``, ``writer``, or ``as-user`` with ids."""

    profile: str
    uid: int = 0
    gid: int = 0
    fs_group: int | None = None


READER = Security("reader")
WRITER = Security("writer")

_CAPS = {"reader": ["DAC_READ_SEARCH"], "writer": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"], "as-user": []}


@dataclass(frozen=True)
class MoverSpec:
    """One mover pod: jdr's own image running ``jdr agent <args>`` with some PVCs mounted."""

    name: str
    run: str
    role: str  # backup, restore, hub-capture, hub-restore, copy
    args: tuple[str, ...]
    mounts: tuple[Mount, ...]
    security: Security
    node_name: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MoverConfig:
    """What every mover of one deployment shares (from Settings; see :func:`mover_config`)."""

    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    env_from_secret: str = ""
    service_account: str = ""
    timeout: int = 3600
    labels: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)


def mover_env(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The ``JDR_…`` configuration a mover's ``jdr agent`` needs to open the same repository.

    Only names and URLs travel as plain values: credentials and the encryption key come from
    ``mover_env_from_secret`` (the key through ``encryption.key_env``). A key *file* cannot reach a mover,
    so it is refused with a hint.
    """
    enc = settings.encryption
    if enc.key_file:
        raise ConfigError("encryption.key_file: mover pods cannot read a key file of the jdr pod",
                          hint="on Kubernetes use encryption.key_env, with the key in the Secret named by "
                               "deployment.kubernetes.mover_env_from_secret")
    if enc.identities:
        raise ConfigError("encryption.identities: mover pods cannot read key files of the jdr pod",
                          hint="on Kubernetes put every key in the Secret behind encryption.key_env, one "
                               "AGE-SECRET-KEY line each (the first is the installation key)")
    env: list[tuple[str, str]] = [("JDR_REPOSITORY_URL", settings.repository.url),
                                  ("JDR_LOG_FORMAT", "json"), ("PYTHONUNBUFFERED", "1"), ("HOME", "/tmp")]
    if settings.repository.endpoint_url:
        env.append(("JDR_REPOSITORY_ENDPOINT_URL", settings.repository.endpoint_url))
    if enc.key_env:
        env.append(("JDR_ENCRYPTION_KEY_ENV", enc.key_env))
    if enc.recipients:
        env.append(("JDR_ENCRYPTION_RECIPIENTS", "[" + ", ".join(enc.recipients) + "]"))
    return tuple(env)


def make_mover_pod(spec: MoverSpec, cfg: MoverConfig) -> Obj:
    """The pod of one mover: runs once (``restartPolicy: Never``), bounded by ``activeDeadlineSeconds``,
    no ServiceAccount token (it never calls the Kubernetes API), result in its termination message."""
    sec = spec.security
    container_sc: Obj = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
        "capabilities": {"drop": ["ALL"], **({"add": _CAPS[sec.profile]} if _CAPS[sec.profile] else {})},
    }
    pod_sc: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
    if sec.profile == "as-user":
        container_sc.update(runAsUser=sec.uid, runAsGroup=sec.gid, runAsNonRoot=sec.uid != 0)
        if sec.fs_group is not None:
            pod_sc["fsGroup"] = sec.fs_group
            pod_sc["fsGroupChangePolicy"] = "OnRootMismatch"
    else:
        container_sc.update(runAsUser=0, runAsGroup=0, runAsNonRoot=False)
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    for i, m in enumerate(spec.mounts):
        volumes.append({"name": f"vol{i}", "persistentVolumeClaim": {"claimName": m.claim,
                                                                     "readOnly": m.read_only}})
        mounts.append({"name": f"vol{i}", "mountPath": m.path, "readOnly": m.read_only})
    container: Obj = {
        "name": "mover", "image": cfg.image, "imagePullPolicy": "IfNotPresent",
        "command": [*cfg.command, "agent", *spec.args],
        "env": [{"name": k, "value": v} for k, v in cfg.env],
        "volumeMounts": mounts, "securityContext": container_sc,
        "terminationMessagePath": RESULT_PATH, "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if cfg.env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": cfg.env_from_secret}}]
    resources: Obj = {}
    if cfg.requests:
        resources["requests"] = dict(cfg.requests)
    if cfg.limits:
        resources["limits"] = dict(cfg.limits)
    if resources:
        container["resources"] = resources
    pod_spec: Obj = {
        "restartPolicy": "Never", "activeDeadlineSeconds": cfg.timeout,
        "automountServiceAccountToken": False, "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10, "securityContext": pod_sc,
        "containers": [container], "volumes": volumes,
    }
    if cfg.service_account:
        pod_spec["serviceAccountName"] = cfg.service_account
    if spec.node_name:
        pod_spec["nodeName"] = spec.node_name
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": spec.name,
                     "labels": jdr_labels(spec.run, "mover", {**cfg.labels, PURPOSE_LABEL: spec.role}),
                     "annotations": dict(spec.annotations)},
        "spec": pod_spec,
    }


# --- reading what the API returns -----------------------------------------------------------------------


def pod_claims(pod: Obj) -> list[str]:
    """Names of the PVCs a pod mounts."""
    return [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")]


def pod_is_active(pod: Obj) -> bool:
    """A pod that holds its volumes: not yet terminated (Pending or Running, being deleted included)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def container_result(pod: Obj) -> tuple[int | None, str, str]:
    """(exit code, reason, termination message) of a mover's container; exit code None while running."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return int(term.get("exitCode", 0)), str(term.get("reason") or ""), str(term.get("message") or "")
    return None, "", ""


def pending_reason(pod: Obj) -> str:
    """Why a pod is not running yet (unschedulable, volume not ready …), as the API reports it."""
    st = pod.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") == "False" and c.get("message"):
            return f"{c.get('reason') or c.get('type')}: {c['message']}"
    for cs in st.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("message"):
            return f"{waiting.get('reason')}: {waiting['message']}"
    return str(st.get("phase") or "Pending")


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
          "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def parse_quantity(q: str | int) -> int:
    """A Kubernetes storage quantity (``1Gi``, ``500M``, ``1e3``, ``1073741824``) in bytes."""
    if isinstance(q, int):
        return q
    text = str(q).strip()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * _UNITS[unit])
    if text.endswith("m"):
        return int(float(text[:-1]) / 1000)
    return int(float(text))
