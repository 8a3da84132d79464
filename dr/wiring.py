"""Wiring: turn validated settings into the objects operations work with (store, repository,
deployment, Hub API client, catalog, metrics, webhooks). The only place that knows every adapter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dr.errors import ConfigError, UsageError
from dr.policy.object_lock import ObjectLockPolicy, make_lock_policy
from dr.policy.retention import Duration, RetentionPolicy, parse_duration
from dr.repository.repository import Repository
from dr.repository.store import Store
from dr.settings import Settings

if TYPE_CHECKING:  # imported where used: SQLAlchemy and prometheus_client cost a second at start-up,
    # cryptography, the deployments and the hub API client a part of one (`jdr list` needs none of them)
    from dr.catalog import Catalog
    from dr.crypto.keyring import Keyring
    from dr.crypto.mac import MacKeyring
    from dr.deployments.base import Deployment
    from dr.hubapi import HubApi
    from dr.metrics import Metrics
    from dr.notify import Webhook


def make_store(settings: Settings, *, prune: bool = False) -> Store:
    """The repository's store; ``prune``: with the prune role's credentials when
    ``repository.prune_credentials_env`` names them (docs/CREDENTIALS.md)."""
    url = settings.repository.url
    if not url:
        raise ConfigError("repository: required (s3://bucket/prefix or file:///path)")
    try:
        if url.startswith("s3://"):
            from dr.repository.s3 import S3Store

            access_key, secret_key = _prune_keys(settings) if prune else (None, None)
            return S3Store.from_url(url, endpoint_url=settings.repository.endpoint_url or None,
                                    access_key=access_key, secret_key=secret_key)
        if url.startswith("file://"):
            from dr.repository.file import FileStore

            return FileStore.from_url(url)
    except ValueError as e:
        raise ConfigError(f"repository: {e}") from e
    raise ConfigError(f"repository: {url!r} is neither s3://bucket/prefix nor file:///path")


def _prune_keys(settings: Settings) -> tuple[str | None, str | None]:
    """The prune role's key pair from ``<prefix>AWS_ACCESS_KEY_ID``/``…SECRET_ACCESS_KEY``, or (None, None)
    when ``repository.prune_credentials_env`` is empty (boto3's own chain decides)."""
    prefix = settings.repository.prune_credentials_env
    if not prefix:
        return None, None
    names = (f"{prefix}AWS_ACCESS_KEY_ID", f"{prefix}AWS_SECRET_ACCESS_KEY")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ConfigError(f"repository.prune_credentials_env: the environment variable(s) {', '.join(missing)} "
                          "are not set", hint="they hold the prune role's S3 key pair: see docs/CREDENTIALS.md")
    return os.environ[names[0]], os.environ[names[1]]


def make_copy_store(settings: Settings, to: str | None = None) -> Store:
    """The store of the second repository that ``jdr copy`` writes to: ``to`` (``--to``), else ``copy.to``.

    Its S3 credentials come from ``<copy.credentials_env>AWS_ACCESS_KEY_ID``/``…AWS_SECRET_ACCESS_KEY``
    (``JDR_COPY_AWS_…`` by default; so the two repositories can live in different accounts or providers);
    when neither variable is set, boto3's own chain is used, as for the first repository. One set without
    the other is an error."""
    c = settings.copy
    url = (to if to is not None else c.to).strip()
    if not url:
        raise ConfigError("copy.to: required (s3://bucket/prefix or file:///path), or give --to URL")
    try:
        if url.startswith("s3://"):
            from dr.repository.s3 import S3Store

            key_env, secret_env = f"{c.credentials_env}AWS_ACCESS_KEY_ID", f"{c.credentials_env}AWS_SECRET_ACCESS_KEY"
            key, secret = os.environ.get(key_env, ""), os.environ.get(secret_env, "")
            if bool(key) != bool(secret):
                missing = secret_env if key else key_env
                raise ConfigError(f"copy.credentials_env: the environment variable {missing} is not set",
                                  hint=f"set both {key_env} and {secret_env}, or neither (then boto3's own "
                                       "chain is used)")
            return S3Store.from_url(url, endpoint_url=c.endpoint_url or None, region=c.region or None,
                                    access_key=key or None, secret_key=secret or None)
        if url.startswith("file://"):
            from dr.repository.file import FileStore

            return FileStore.from_url(url)
    except ValueError as e:
        raise ConfigError(f"copy.to: {e}") from e
    raise ConfigError(f"copy.to: {url!r} is neither s3://bucket/prefix nor file:///path")


def make_encryptor(settings: Settings) -> Keyring | None:
    """The keys configured under ``encryption``: None when encryption is off (no key_file/key_env)."""
    enc = settings.encryption
    if enc.key_file and enc.key_env:
        raise ConfigError("encryption: set key_file or key_env, not both")
    if not (enc.key_file or enc.key_env):
        if enc.identities:
            raise ConfigError("encryption.identities: set encryption.key_file or key_env as well",
                              hint="identities only add keys to decrypt with; the installation key writes")
        return None  # decided before importing cryptography: an unencrypted `jdr list` needs none of it
    from dr.crypto.age import Recipient
    from dr.crypto.keyring import Keyring
    from dr.crypto.keys import load_identities

    if enc.key_file:
        identities = load_identities(path=Path(enc.key_file))
    else:
        text = os.environ.get(enc.key_env)
        if not text:
            raise ConfigError(f"encryption.key_env: the environment variable {enc.key_env} is not set")
        identities = load_identities(text=text)
    if enc.identities and settings.deployment.kind == "kubernetes":
        raise ConfigError("encryption.identities: mover pods cannot read key files of the jdr pod",
                          hint="on Kubernetes put every key in the Secret behind encryption.key_env, one "
                               "AGE-SECRET-KEY line each (the first is the installation key)")
    for path in enc.identities:
        identities += load_identities(path=Path(path))
    try:
        extra = [Recipient.parse(r) for r in enc.recipients]
    except (ValueError, ConfigError) as e:
        raise ConfigError(f"encryption.recipients: {e}") from e
    return Keyring(identities, extra)


def make_mac_keyring(settings: Settings) -> MacKeyring | None:
    """The manifest MAC keys (``encryption.mac_key_file``/``mac_key_env``); None when none is configured.

    Whether MACs are required is decided here, on the operator's side, never by the repository: a
    configured key makes restore, drill and verify refuse runs it does not authenticate."""
    enc = settings.encryption
    if enc.mac_key_file and enc.mac_key_env:
        raise ConfigError("encryption: set mac_key_file or mac_key_env, not both")
    if enc.mac_key_file:
        where = "encryption.mac_key_file"
        try:
            text = Path(enc.mac_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: cannot read {enc.mac_key_file}: {getattr(e, 'strerror', None) or e}") from e
    elif enc.mac_key_env:
        where = "encryption.mac_key_env"
        text = os.environ.get(enc.mac_key_env, "")
        if not text:
            raise ConfigError(f"{where}: the environment variable {enc.mac_key_env} is not set")
    else:
        return None
    from dr.crypto.mac import MacKeyring, parse_keys

    try:
        return MacKeyring(parse_keys(text))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}", hint="`jdr key mac-generate` writes a MAC key") from e


def open_repository(settings: Settings, *, create: bool = False, store: Store | None = None,
                    keys: bool = True, lock_policy: ObjectLockPolicy | None = None) -> Repository:
    """The configured repository; ``keys=False`` opens it without the encryption keys (``jdr copy``
    carries artifacts as stored and needs none: its job holds no key). ``lock_policy``: the S3 Object
    Lock runs get (default: from the settings, docs/FORMAT.md, "Object Lock")."""
    return Repository.open(store or make_store(settings), make_encryptor(settings) if keys else None,
                           create=create,
                           stale_after=settings.repository.lock_stale_after,
                           refresh_every=settings.repository.lock_refresh_every,
                           mac=make_mac_keyring(settings) if keys else None,
                           lock_policy=lock_policy or object_lock_policy(settings))


def object_lock_policy(settings: Settings) -> ObjectLockPolicy:
    """``repository.object_lock_mode``/``object_lock_days`` (0: derived from ``retention``). Only used when
    the bucket has S3 Object Lock enabled (docs/FORMAT.md, "Object Lock")."""
    r = settings.repository
    return make_lock_policy(r.object_lock_mode, r.object_lock_days, retention_policy(settings))


def make_deployment(settings: Settings) -> Deployment:
    kind = settings.deployment.kind
    if kind == "local":
        from dr.deployments.local import LocalDeployment

        return LocalDeployment(settings.deployment)
    if kind == "kubernetes":
        try:
            from dr.deployments.kubernetes.deployment import KubernetesDeployment
        except ImportError as e:  # pragma: no cover - the package ships it
            raise ConfigError(f"deployment.kind kubernetes is unavailable: {e}") from e
        return KubernetesDeployment(settings)
    raise ConfigError(f"deployment.kind: {kind!r} is not one of local, kubernetes")


def make_hub_api(settings: Settings) -> HubApi | None:
    api = settings.hub_api
    if not api.url:
        return None
    token = os.environ.get(api.token_env, "")
    if not token:
        raise ConfigError(f"hub_api.token_env: the environment variable {api.token_env} is not set",
                          hint="the token of the jdr service registered in the hub")
    from dr.hubapi import HubApi

    return HubApi(api.url, token)


def default_catalog_url(settings: Settings) -> str:
    if settings.catalog.url:
        return settings.catalog.url
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jdr"
    import hashlib

    name = hashlib.sha256(settings.repository.url.encode()).hexdigest()[:16]
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return "sqlite://"  # read-only home (a pod): an in-memory catalog, rebuilt each time
    return f"sqlite:///{cache / f'catalog-{name}.sqlite'}"


def open_catalog(settings: Settings, repo: Repository) -> Catalog:
    from dr.catalog import Catalog

    return Catalog(default_catalog_url(settings), repository_url=repo.url, repository_id=repo.id)


def retention_policy(settings: Settings) -> RetentionPolicy:
    r = settings.retention
    data: dict[str, Any] = {k: v for k, v in r.__dict__.items() if k != "keep_within"}
    if r.keep_within:
        data["keep_within"] = r.keep_within
    return RetentionPolicy.from_dict(data)


def full_every(settings: Settings) -> Duration | None:
    """``backup.full_every`` as a Duration (None when empty: no bound). Raises ConfigError naming the key."""
    text = settings.backup.full_every.strip()
    if not text:
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise ConfigError(f"backup.full_every: {e}") from e


def timezone(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"schedule.timezone: unknown time zone {settings.schedule.timezone!r}") from e


def make_metrics() -> Metrics:
    from dr.metrics import Metrics

    return Metrics()


def make_webhooks(settings: Settings) -> list[Webhook]:
    from dr.notify import Webhook

    n = settings.notify
    if not n.webhook:
        return []
    return [Webhook(n.webhook, kind=n.kind, on=tuple(n.on))]  # type: ignore[arg-type]


def require_user(name: str) -> str:
    if not name or name.strip() != name:
        raise UsageError(f"invalid user name {name!r}")
    return name
