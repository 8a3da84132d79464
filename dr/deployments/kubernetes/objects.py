"""Pure builders of the Kubernetes objects jdr creates, and of the records it keeps of the ones it backs up.

Everything returns or takes plain JSON dicts (the API's camelCase shape); nothing here talks to a cluster,
so every object is tested as a dict (tests/unit/test_k8s_objects.py).

Every object jdr creates carries ``app.kubernetes.io/managed-by: jdr``, ``jdr.hub.jupyter.org/run`` (the
backup run, or the restore operation's id) and ``jdr.hub.jupyter.org/role``, so that leftovers of a run
that died can be found and removed by label.

Security of mover pods. The common case is what Pod Security Admission ``restricted`` accepts:

- ``as-user`` (every mover by default): the volume owner's uid/gid (user volumes: the owner recorded by the
  last backup, else ``deployment.kubernetes.volume_uid``/``volume_gid``, z2jh's ``singleuser.uid``/``fsGid``,
  1000/100; the hub DB: the hub's own ids from its Deployment), ``runAsNonRoot``, every capability dropped,
  no privilege escalation, read-only root filesystem, ``RuntimeDefault`` seccomp, no ServiceAccount token.
  Writers also get ``fsGroup`` (= the gid, ``OnRootMismatch``), as the user's own server pod has, so a new
  volume's root is group-writable. The mover checks on the volume that this user can do the job
  (:mod:`.ownership`); if the volume belongs to another single user it is run again as that user.
- The documented exception, only for a volume that truly holds several owners (the jdr process logs it):
  ``reader`` (backup) is uid 0 with only ``DAC_READ_SEARCH``; ``writer`` (restore) is uid 0 with
  ``CHOWN``, ``FOWNER``, ``DAC_OVERRIDE`` and ``FSETID`` — putting back other users' files (chown), their
  modes and times (fowner), into directories they own (dac_override: renames in the volume root and in
  their directories) and keeping setgid bits (fsetid). Added capabilities only take effect for uid 0
  (Kubernetes sets no ambient capabilities, kubernetes/kubernetes#56374), so these run as root; such pods
  need a namespace that allows them (``baseline`` refuses ``DAC_READ_SEARCH``; ``restricted`` refuses all).

Movers get only what their job needs from the Secret ``mover_env_from_secret``: the repository
credentials (``mover_secret_keys``) and, for movers that read the repository back (restores, drill
verification), the age identity; a backup mover gets only the public recipients. Never the Hub API token.
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
    sub_path: str = ""  # a home on a shared (static) volume: only this subdirectory is mounted


@dataclass(frozen=True)
class Security:
    """How a mover runs (see the module doc): ``as-user`` with ids, or the privileged ``reader``/``writer``."""

    profile: str
    uid: int = 0
    gid: int = 0
    fs_group: int | None = None

    @property
    def privileged(self) -> bool:
        return self.profile != "as-user"

    def describe(self) -> str:
        if self.privileged:
            return f"uid 0 with {', '.join(_CAPS[self.profile])}"
        return f"uid {self.uid}, gid {self.gid}, no capabilities"


READER = Security("reader")
WRITER = Security("writer")


def as_owner(uid: int, gid: int, *, writes: bool) -> Security:
    """A mover running as a volume's owner (``fsGroup`` for writers, as the user's own server pod)."""
    return Security("as-user", uid=uid, gid=gid, fs_group=gid if writes else None)


def volume_security(source: dict[str, Any] | None, default_uid: int, default_gid: int, *, writes: bool) -> Security:
    """Who a volume's first mover runs as: the owner a backup recorded in the item's ``source``
    (``owner``; ``owners: several`` when it needed the privileged mover), else the configured default."""
    source = source or {}
    if source.get("owners") == "several":
        return WRITER if writes else READER
    owner = source.get("owner")
    if isinstance(owner, list) and len(owner) == 2 and int(owner[0]) != 0:
        return as_owner(int(owner[0]), int(owner[1]), writes=writes)
    return as_owner(default_uid, default_gid, writes=writes)


def owner_record(result: dict[str, Any], used: Security) -> dict[str, Any]:
    """What a backup records about a volume's owners (read back by :func:`volume_security`)."""
    record: dict[str, Any] = {}
    if isinstance(result.get("owner"), list):
        record["owner"] = [int(x) for x in result["owner"]]
    if used.privileged:
        record["owners"] = "several"
    return record

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
    decrypts: bool = False  # reads artifacts back: gets the age identity (else only public recipients)
    # (env name, Secret, key): values the pod gets through ``secretKeyRef`` only (a hub database password)
    secret_env: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class MoverConfig:
    """What every mover of one deployment shares (from Settings; see :func:`mover_config`)."""

    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    env_from_secret: str = ""
    secret_keys: tuple[str, ...] = ()  # keys of env_from_secret every mover gets (repository credentials)
    key_env: str = ""  # the key of env_from_secret holding the age identity (decrypting movers only)
    recipients: tuple[str, ...] = ()  # public age recipients (movers that only write)
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
    if settings.repository.url.startswith("file://"):
        raise ConfigError(f"repository.url: {settings.repository.url} is a file:// repository, which mover pods "
                          "cannot reach with deployment.kind kubernetes (they do not see the host's paths)",
                          hint="use an s3:// repository (any S3-compatible store, e.g. MinIO or SeaweedFS in "
                               "the cluster)")
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
    if not sec.privileged:
        # uid 0 only where the hub itself runs as root (its DB files are root's): no capabilities still
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
        mounts.append({"name": f"vol{i}", "mountPath": m.path, "readOnly": m.read_only,
                       **({"subPath": m.sub_path} if m.sub_path else {})})
    container: Obj = {
        "name": "mover", "image": cfg.image, "imagePullPolicy": "IfNotPresent",
        "command": [*cfg.command, "agent", *spec.args],
        "env": _env(spec, cfg),
        "volumeMounts": mounts, "securityContext": container_sc,
        "terminationMessagePath": RESULT_PATH, "terminationMessagePolicy": "FallbackToLogsOnError",
    }
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


def _env(spec: MoverSpec, cfg: MoverConfig) -> list[Obj]:
    """Plain settings, the repository credentials, and the key material this mover's job needs."""
    env: list[Obj] = [{"name": k, "value": v} for k, v in cfg.env]
    if cfg.env_from_secret:
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": cfg.env_from_secret, "key": k, "optional": True}}}
                for k in cfg.secret_keys]
    if cfg.key_env and spec.decrypts:
        if not cfg.env_from_secret:
            raise ConfigError("deployment.kubernetes.mover_env_from_secret: required to restore from an encrypted "
                              f"repository (the Secret holding {cfg.key_env})")
        env.append({"name": cfg.key_env, "valueFrom": {"secretKeyRef": {"name": cfg.env_from_secret,
                                                                        "key": cfg.key_env}}})
    elif cfg.recipients:
        env.append({"name": "JDR_AGENT_RECIPIENTS", "value": ",".join(cfg.recipients)})
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for name, secret, key in spec.secret_env]
    return env


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
