"""Configuration: grouped dataclasses, loaded from YAML and ``JDR_…`` environment variables.

The schema *is* these dataclasses: every field is a configuration key, its docstring comment says what it
means, and the loader validates types and rejects unknown keys by name (``deployment.hom: unknown key``).
Every key can also come from the environment: ``retention.keep_daily`` is ``JDR_RETENTION_KEEP_DAILY``;
values from the environment are parsed as YAML scalars or flow lists (``JDR_DEPLOYMENT_RESTART_HUB='[a, b]'``).
The environment wins over the file. ``repository`` may be a URL string or a mapping with ``url``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dr.errors import ConfigError

ENV_PREFIX = "JDR_"


class _Loader(yaml.SafeLoader):
    """YAML with the booleans of YAML 1.2 (``true``/``false`` only). YAML 1.1 (PyYAML's default) also reads
    ``on``/``off``/``yes``/``no`` as booleans, which turned the key ``notify.on`` into ``True``."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str = ""
    """Namespace of the z2jh release (default: the pod's own namespace, else ``default``)."""
    release: str = ""
    """Helm release name, when names carry a ``<release>-`` prefix; discovered when empty."""
    kubeconfig: str = ""
    """Path to a kubeconfig; empty means in-cluster config, else ``$KUBECONFIG``/``~/.kube/config``."""
    hub_selector: str = "component=hub"
    """Label selector of the hub Deployment."""
    hub_secret: str = ""
    """Name of the ``hub`` Secret; discovered from the Deployment when empty."""
    hub_db_claim: str = ""
    """Name of the hub DB PVC; discovered from the Deployment's volumes when empty."""
    hub_db_path: str = "/srv/jupyterhub/jupyterhub.sqlite"
    """Path of the SQLite file inside the hub pod."""
    user_selector: str = "component=singleuser-storage"
    """Label selector of user PVCs."""
    snapshot_class: str = ""
    """VolumeSnapshotClass for the ``snapshot`` methods; cluster default when empty."""
    mover_image: str = ""
    """Image of mover pods (jdr's own image); default: the image of the running jdr pod."""
    mover_command: list[str] = field(default_factory=lambda: ["jdr"])
    """Command that runs jdr inside a mover pod."""
    mover_service_account: str = ""
    """ServiceAccount for mover pods (needs no API access)."""
    mover_timeout: int = 3600
    """Seconds a mover pod may run before its item fails."""
    concurrency: int = 4
    """How many mover pods run at once."""
    mover_batch: int = 25
    """Most volumes one backup mover pod archives (one after the other; each its own archive and item).
    1 turns batching off (a mover per volume)."""
    node_concurrency: int = 2
    """How many mover pods run at once on one node, for volumes in use there (pinned to that node)."""
    snapshot_timeout: int = 600
    """Seconds to wait for a VolumeSnapshot to become ready."""
    hub_ready_timeout: int = 600
    """Seconds to wait for the hub to become ready after a restore."""
    storage_class: str = ""
    """Storage class for recreated PVCs when the manifest records none."""
    mover_env_from_secret: str = ""
    """Secret holding the repository credentials (and the encryption key) that mover pods receive."""
    mover_secret_keys: list[str] = field(default_factory=lambda: [
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"])
    """Keys of ``mover_env_from_secret`` every mover gets (each optional); the key named by
    ``encryption.key_env`` goes only to movers that decrypt; nothing else (never the Hub API token)."""
    volume_uid: int = 1000
    """Owner of user volumes (z2jh ``singleuser.uid``): movers run as it until a backup records another."""
    volume_gid: int = 100
    """Group of user volumes (z2jh ``singleuser.fsGid``)."""
    pod_labels: dict[str, str] = field(default_factory=dict)
    """Extra labels for mover pods."""
    mover_requests: dict[str, str] = field(default_factory=lambda: {"cpu": "100m", "memory": "256Mi"})
    """Resource requests of mover pods."""
    mover_limits: dict[str, str] = field(default_factory=lambda: {"memory": "2Gi"})
    """Resource limits of mover pods (memory stays bounded: archives are streamed)."""
    snapshot_annotations: dict[str, str] = field(default_factory=dict)
    """Extra annotations on the VolumeSnapshots jdr creates (some CSI drivers read options from them)."""
    pvc_timeout: int = 300
    """Seconds to wait for a PVC jdr creates to be bound, or for one it deletes to be gone."""
    drill_namespace: str = ""
    """Namespace that drills restore into, created once by the administrator with jdr's Role there
    (``cronjobs/drill/``); drills need no cluster-wide write. Required for ``jdr drill`` on Kubernetes."""
    drill_storage_class: str = ""
    """Storage class of the drill's PVCs (must delete its volumes); default: as recorded, else ``storage_class``."""
    home_storage: str = "auto"
    """Where homes live: ``dynamic`` (a PVC per server), ``static`` (subdirectories of one shared PVC, z2jh
    ``singleuser.storage.type: static``), or ``auto``: read from the chart values in the hub Secret."""
    static_claim: str = ""
    """static: the shared PVC of all homes (z2jh ``singleuser.storage.static.pvcName``); discovered when empty."""
    static_subpath: str = ""
    """static: a home's subdirectory, as KubeSpawner expands it (z2jh ``singleuser.storage.static.subPath``,
    e.g. ``{username}`` or ``{escaped_username}``); discovered when empty, else ``{username}``."""
    slug_scheme: str = ""
    """static: KubeSpawner's ``slug_scheme`` (``safe`` or ``escape``) for ``{username}`` in ``static_subpath``;
    discovered from ``hub.config.KubeSpawner.slug_scheme`` when empty, else ``safe`` (KubeSpawner 7's default)."""
    extra_volumes: list[str] = field(default_factory=list)
    """Volumes the hub mounts for every server (z2jh ``singleuser.storage.extraVolumes``) to back up, each as
    its own item: a volume name from ``extraVolumes`` (its PVC) or a PVC name. None by default."""


@dataclass(frozen=True)
class DeploymentSettings:
    kind: str = "local"
    """``local`` (a hub on one machine) or ``kubernetes`` (a z2jh release)."""
    hub_db: str = ""
    """local: path of the hub's SQLite database."""
    hub_db_url: str = ""
    """local: the hub's database as JupyterHub's ``db_url`` names it, for a hub on PostgreSQL or MySQL/MariaDB
    (``postgresql://jupyterhub@127.0.0.1:5432/jupyterhub``); backed up with ``pg_dump``/``mysqldump``. Instead
    of ``hub_db``. A password in it is never logged; better keep it in ``hub_db_password_env``."""
    hub_db_password_env: str = ""
    """local: name of an environment variable holding the password of ``hub_db_url`` (z2jh: ``hub.db.password``)."""
    homes: str = ""
    """local: template of a user's home directory, with ``{username}`` (``/home/jupyter-{username}``) or
    ``{tljh_username}`` (TLJH's system user name, hashed when long); ``tljh`` means ``/home/{tljh_username}``."""
    ignore_homes: list[str] = field(default_factory=list)
    """local: directories of the ``homes`` layout that are not hub homes and are never backed up as orphans,
    as full paths or shell globs (``/home/ubuntu``, ``/home/admin-*``). A hub user's home is never ignored."""
    restart_hub: list[str] = field(default_factory=list)
    """local: command that restarts the hub (run after a hub restore)."""
    stop_hub: list[str] = field(default_factory=list)
    """local: command that stops the hub before its database is replaced."""
    start_hub: list[str] = field(default_factory=list)
    """local: command that starts the hub again (default: ``restart_hub``)."""
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    """kubernetes: where and how to find the z2jh release."""


@dataclass(frozen=True)
class EncryptionSettings:
    key_file: str = ""
    """Path of an age identity file (``AGE-SECRET-KEY-1…``); enables encryption of every artifact. Its first
    identity is the installation key (one of the repository's recipients); further lines only decrypt."""
    key_env: str = ""
    """Name of an environment variable holding the age identity (or several lines) instead of a file."""
    identities: list[str] = field(default_factory=list)
    """More age key files, only to decrypt: older keys kept after ``jdr key rotate``, a recovery key."""
    recipients: list[str] = field(default_factory=list)
    """Extra age recipients (``age1…``) given to a new repository, e.g. an offline recovery key; for an
    existing repository each must already be one of its recipients (``jdr key add-recipient``)."""
    secret_in_clear: bool = False
    """Store the hub Secret unencrypted when no key is configured (off: the Secret is then not stored)."""
    mac_key_file: str = ""
    """Path of a manifest MAC key file (``JDR-MAC-KEY-…`` lines, made by ``jdr key mac-generate``): every new
    manifest is signed with its first key, and restore, drill and verify refuse runs no key of it
    authenticates. More lines only verify (older keys kept after a rotation). Independent of encryption."""
    mac_key_env: str = ""
    """Name of an environment variable holding the MAC key line(s) instead of a file."""


@dataclass(frozen=True)
class RepositorySettings:
    url: str = ""
    """``s3://bucket/prefix`` or ``file:///path``."""
    endpoint_url: str = ""
    """S3 endpoint override (otherwise boto3's chain: ``AWS_ENDPOINT_URL``, profiles …)."""
    lock_stale_after: int = 900
    """Seconds after which a lock whose holder stopped refreshing it is considered stale, judged by the
    store's own clock (object time); at least 3 times ``lock_refresh_every``."""
    lock_refresh_every: int = 60
    """Seconds between refreshes of a held lock."""
    prune_credentials_env: str = ""
    """For one process that runs prune besides backups (``jdr worker``): a prefix such that
    ``<prefix>AWS_ACCESS_KEY_ID`` and ``<prefix>AWS_SECRET_ACCESS_KEY`` hold the prune role's S3 key pair,
    used by prune only (docs/CREDENTIALS.md). Empty: prune uses the same credentials as every command."""
    object_lock_mode: str = "GOVERNANCE"
    """S3 Object Lock mode of every artifact and manifest when the bucket has Object Lock enabled:
    ``GOVERNANCE`` or ``COMPLIANCE`` (docs/FORMAT.md, "Object Lock"); unused otherwise."""
    object_lock_days: int = 0
    """How many days each run's objects stay locked; 0 derives it from ``retention`` (the longest the
    policy keeps a run, plus a day)."""


@dataclass(frozen=True)
class CopySettings:
    to: str = ""
    """The second repository ``jdr copy`` replicates runs to: ``s3://bucket/prefix`` (another bucket, region,
    account or provider) or ``file:///path``; ``jdr copy --to URL`` overrides it."""
    endpoint_url: str = ""
    """S3 endpoint of the second repository. Empty: boto3's chain (``AWS_ENDPOINT_URL``) — that is, the
    first repository's endpoint, unless that one is set in ``repository.endpoint_url``."""
    region: str = ""
    """S3 region of the second repository (empty: boto3's chain)."""
    credentials_env: str = "JDR_COPY_"
    """A prefix such that ``<prefix>AWS_ACCESS_KEY_ID`` and ``<prefix>AWS_SECRET_ACCESS_KEY`` hold the second
    repository's S3 key pair (like ``repository.prune_credentials_env``). When neither variable is set,
    boto3's own chain (the first repository's credentials) is used."""


@dataclass(frozen=True)
class HubApiSettings:
    url: str = ""
    """Hub REST API base, e.g. ``http://hub:8081/hub/api``."""
    token_env: str = "JDR_HUB_TOKEN"  # noqa: S105 - the name of a variable, not a secret
    """Environment variable holding the API token (never put the token itself in the file)."""
    stop_timeout: int = 300
    """Seconds to wait for a user's server to stop."""


@dataclass(frozen=True)
class RetentionSettings:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: str = ""
    """Keep every run younger than this duration (``7d``, ``36h``, ``2w``)."""


@dataclass(frozen=True)
class ScheduleSettings:
    backup: str = "0 2 * * *"
    prune: str = "30 3 * * *"
    drill: str = "0 5 1 */3 *"
    copy: str = ""
    """When ``jdr copy`` replicates new runs to ``copy.to`` (empty: never; e.g. ``0 4 * * *``)."""
    timezone: str = "UTC"
    """IANA time zone of the schedules and of retention periods."""


@dataclass(frozen=True)
class BackupSettings:
    method: str = "archive"
    """``archive``, ``snapshot`` or ``snapshot+archive`` (Kubernetes); local always archives."""
    excludes: list[str] = field(default_factory=list)
    """Glob patterns left out of volume archives (matched on the relative path and on each name)."""
    full_every: str = "30d"
    """Longest time an unchanged volume's archive is referenced by later runs, counted from the run that
    wrote it (``30d``, ``2w``, ``1m``); then the volume is read and stored again. Empty: no bound."""
    compression_level: int = 3
    """zstd level (1-19)."""
    threads: int = 0
    """Threads compressing the volumes' zstd frames while the backup reads and hashes files (0: one per
    core). Local deployments: one pool of that many for all the homes archived at once, with at most one
    frame of ~4 MiB per thread waiting, in all; a Kubernetes mover: its own, at most 4 frames waiting."""
    parallel_volumes: int = 2
    """Local deployments: how many homes are archived at once (1: one after the other). One home's
    reading, hashing and compressing do not fill a machine of several cores, so two homes at once finish
    sooner; each one adds its own buffers to the memory used (the compression threads are shared)."""


@dataclass(frozen=True)
class CatalogSettings:
    url: str = ""
    """SQLAlchemy URL of the catalog; default: an SQLite file in the user's cache directory."""


@dataclass(frozen=True)
class MetricsSettings:
    textfile_dir: str = ""
    """Directory of node_exporter's textfile collector: each command writes its own file there
    (``jdr_backup.prom``, ``jdr_prune.prom``, ``jdr_drill.prom``, ``jdr_repository.prom``)."""
    textfile: str = ""
    """Older form of ``textfile_dir``: the per-command files are written into this file's directory."""
    pushgateway: str = ""
    """Push metrics of one-shot runs to this Pushgateway URL (one group per command: job ``jdr_backup`` …)."""
    port: int = 9090
    """Port of the worker's /metrics and /healthz endpoint (0: off)."""
    bind: str = "127.0.0.1"
    """Address the worker's endpoint listens on. In a pod that Prometheus scrapes, set ``0.0.0.0``."""


@dataclass(frozen=True)
class WorkerSettings:
    lock_wait: int = 3600
    """Seconds a job of ``jdr worker`` keeps retrying (with back-off) while another process holds the
    repository lock, before it gives up loudly (log, metric, webhook)."""
    lock_retry_min: int = 15
    """First wait before retrying a locked repository; it doubles up to ``lock_retry_max``."""
    lock_retry_max: int = 300
    """Longest wait between two retries of a locked repository."""
    stop_grace: int = 80
    """Seconds a running job may take to finish after SIGTERM (systemd's default stop timeout is 90 s,
    Kubernetes' terminationGracePeriodSeconds 30 s: raise it there to match)."""


@dataclass(frozen=True)
class NotifySettings:
    webhook: str = ""
    """URL to POST a JSON (or Slack-shaped) message to."""
    kind: str = "json"
    """``json`` or ``slack``."""
    on: list[str] = field(default_factory=lambda: ["failure"])
    """Events that notify: ``failure``, ``success``."""


@dataclass(frozen=True)
class DrillSettings:
    users: int = 0
    """How many users a drill restores (0: all users of the run)."""
    scratch: str = ""
    """local: directory where drills restore (default: a temporary directory)."""
    start_hub: bool = False
    """Start a real hub on the restored database to check that it answers, where possible."""


@dataclass(frozen=True)
class ServeSettings:
    """``jdr serve``, the self-service restore service (docs/SELF-SERVICE.md)."""

    max_restore_bytes: int = 2 * 1024**3
    """Largest restore (bytes of file content) a user may start; bigger ones go to an administrator."""
    max_download_bytes: int = 2 * 1024**3
    """Largest download (file or folder) a user may start."""
    downloads_per_hour: int = 60
    """Downloads a user may start per hour (administrators acting for themselves too)."""
    restores_per_hour: int = 20
    """Restores a user may start per hour (and only one at a time)."""
    audit_log: str = ""
    """JSON-lines file every self-service download and restore is appended to ("" : the log only)."""
    timezone: str = ""
    """Time zone of the dates shown ("": the browser's, falling back to ``schedule.timezone``)."""
    restore_into: str = "restored"
    """Folder of the home restores go into: ``<restore_into>/<run date>/<path>``."""


@dataclass(frozen=True)
class Settings:
    deployment: DeploymentSettings = field(default_factory=DeploymentSettings)
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    copy: CopySettings = field(default_factory=CopySettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    hub_api: HubApiSettings = field(default_factory=HubApiSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    drill: DrillSettings = field(default_factory=DrillSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    log_format: str = "auto"
    """``text``, ``json``, or ``auto`` (JSON when not on a terminal inside Kubernetes)."""


_CHOICES: dict[str, tuple[str, ...]] = {
    "deployment.kind": ("local", "kubernetes"),
    "deployment.kubernetes.home_storage": ("auto", "dynamic", "static"),
    "backup.method": ("archive", "snapshot", "snapshot+archive"),
    "notify.kind": ("json", "slack"),
    "log_format": ("auto", "text", "json"),
}


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file (if any), apply ``JDR_…`` overrides, validate. Raises ConfigError naming the key."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read configuration {path}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"configuration {path} is not UTF-8 text (byte {e.start})") from e
        try:
            loaded = _yaml(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration {path} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration {path}: the top level must be a mapping")
        raw = loaded
    if isinstance(raw.get("repository"), str):
        raw["repository"] = {"url": raw["repository"]}
    if isinstance(raw.get("retention"), dict) and isinstance(raw["retention"].get("keep_within"), int):
        raw["retention"]["keep_within"] = f"{raw['retention']['keep_within']}d"
    try:
        _apply_env(raw, Settings, "", env)
        settings: Settings = _build(Settings, raw, "")
        _check_choices(settings)
    except ConfigError as e:
        if path is None:
            raise
        # Name the file: with JDR_CONFIG set by a CronJob, "retention.keep_daily: …" alone is a riddle.
        raise ConfigError(f"{e.message} (configuration {path})", hint=e.hint) from e
    return settings


def env_name(key_path: str) -> str:
    """``retention.keep_daily`` -> ``JDR_RETENTION_KEEP_DAILY``."""
    return ENV_PREFIX + key_path.replace(".", "_").upper()


def key_paths(cls: type[Any] | None = None, prefix: str = "") -> list[str]:
    """Every configuration key, dotted (used for docs and the environment mapping)."""
    cls = cls or Settings
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += key_paths(hints[f.name], path + ".")
        else:
            out.append(path)
    return out


def _apply_env(raw: dict[str, Any], cls: type[Any], prefix: str, env: Mapping[str, str]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = raw.get(f.name)
            if sub is None:
                sub = {}
            if isinstance(sub, dict):
                _apply_env(sub, tp, path + ".", env)  # type: ignore[arg-type]
                if sub:
                    raw[f.name] = sub
            continue
        name = env_name(path)
        if name in env:
            try:
                raw[f.name] = _yaml(env[name]) if env[name] != "" else ""
            except yaml.YAMLError as e:
                raise ConfigError(f"{name}: cannot parse {env[name]!r}: {e}") from e
    # JDR_REPOSITORY is the short form of JDR_REPOSITORY_URL.
    if cls is Settings and "JDR_REPOSITORY" in env:
        raw.setdefault("repository", {})
        if isinstance(raw["repository"], dict):
            raw["repository"]["url"] = env["JDR_REPOSITORY"]


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "configuration"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_typename(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key",
                              hint=f"known keys here: {', '.join(sorted(names))}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        path = f"{prefix}{f.name}"
        values[f.name] = _convert(hints[f.name], raw[f.name], path)
    return cls(**values)


def _convert(tp: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, path + ".")  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = value.split() if value.strip() else []
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_typename(value)}")
        return [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_typename(value)}")
        return {str(k): _convert(str, v, f"{path}.{k}") for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        raise TypeError(f"unsupported settings type at {path}")  # not used by the schema
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_typename(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_typename(value)}")
        lowest = -1 if path.startswith("retention.") else 0  # -1: unlimited, as in restic
        if value < lowest:
            raise ConfigError(f"{path}: must not be {'below -1' if lowest else 'negative'}")
        return value
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{path}: expected a string, got {_typename(value)}")
        return str(value)
    raise TypeError(f"unsupported settings type {tp!r} at {path}")


def _typename(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string"}.get(type(value), type(value).__name__)


def _check_choices(settings: Settings) -> None:
    for path, choices in _CHOICES.items():
        value: Any = settings
        for part in path.split("."):
            value = getattr(value, part)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")
    if settings.repository.lock_refresh_every < 1:
        raise ConfigError("repository.lock_refresh_every: must be at least 1 second")
    if settings.repository.lock_stale_after < 3 * settings.repository.lock_refresh_every:
        raise ConfigError(
            f"repository.lock_stale_after ({settings.repository.lock_stale_after}) must be at least 3 times "
            f"repository.lock_refresh_every ({settings.repository.lock_refresh_every})",
            hint="otherwise a running holder that missed a refresh could have its lock broken")
    if not 1 <= settings.backup.compression_level <= 22:
        raise ConfigError("backup.compression_level: must be between 1 and 22")
    for event in settings.notify.on:
        if event not in ("failure", "success"):
            raise ConfigError(f"notify.on: {event!r} is not one of failure, success")
