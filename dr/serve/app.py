"""The ``jdr serve`` tornado application: routes under the service prefix, security headers, and the shared
state of one service process (:class:`ServeContext`).

The hub starts the service (or it runs as its own Deployment on Kubernetes) with the JupyterHub service
environment: ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_CLIENT_ID``,
``JUPYTERHUB_SERVICE_PREFIX`` (``/services/jdr/``), ``JUPYTERHUB_OAUTH_CALLBACK_URL``,
``JUPYTERHUB_OAUTH_ACCESS_SCOPES``; :class:`jupyterhub.services.auth.HubOAuth` reads them.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import tornado.web
from jupyterhub.services.auth import HubOAuthCallbackHandler

from dr.catalog import Catalog
from dr.operations.self_service import SelfService
from dr.repository.repository import Repository
from dr.serve import handlers
from dr.serve.audit import AuditLog
from dr.serve.jobs import Jobs
from dr.serve.limits import RateLimiter, RestoreGate
from dr.settings import ServeSettings, Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent


@dataclass
class ServeContext:
    """What every request handler shares: the repository view, limits, audit, restore jobs."""

    service: SelfService
    settings: ServeSettings
    tz: tzinfo  # dates shown before the browser's script converts them to its own zone
    audit: AuditLog
    downloads: RateLimiter
    restores: RateLimiter
    gate: RestoreGate = field(default_factory=RestoreGate)
    jobs: Jobs = field(default_factory=Jobs)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=4, thread_name_prefix="jdr-serve"))
    lock: threading.Lock = field(default_factory=threading.Lock)


def service_prefix() -> str:
    """``JUPYTERHUB_SERVICE_PREFIX`` (``/services/jdr/``), always with a trailing slash."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/jdr/")
    return prefix if prefix.endswith("/") else prefix + "/"


def make_app(ctx: ServeContext, prefix: str | None = None, *, cookie_secret: bytes | None = None,
             debug: bool = False) -> tornado.web.Application:
    """The application. Every page handler authenticates through the hub (OAuth) on every request."""
    p = prefix or service_prefix()
    user = r"(?P<user>[^/]+)"
    run = r"(?P<run>[A-Za-z0-9._-]+)"
    entry = r"(?P<entry>[0-9]+)"
    routes: list[Any] = [
        (p, handlers.HomeHandler),
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (p + "audit", handlers.AuditHandler),
        (p + "u/" + user + "/", handlers.RunsHandler),
        (p + "u/" + user + "/search", handlers.SearchHandler),
        (p + "u/" + user + "/run/" + run + "/", handlers.FilesHandler),
        (p + "u/" + user + "/run/" + run + "/entry/" + entry + "/preview", handlers.PreviewHandler),
        (p + "u/" + user + "/run/" + run + "/entry/" + entry + "/download", handlers.DownloadHandler),
        (p + "u/" + user + "/run/" + run + "/entry/" + entry + "/restore", handlers.RestoreHandler),
        (p + "u/" + user + "/job/(?P<job>[A-Za-z0-9_-]+)", handlers.JobHandler),
        (p + "u/" + user + "/job/(?P<job>[A-Za-z0-9_-]+)\\.json", handlers.JobJsonHandler),
    ]
    return tornado.web.Application(
        routes,
        jdr=ctx,
        prefix=p,
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        static_url_prefix=p + "static/",
        xsrf_cookies=True,
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        default_handler_class=handlers.NotFoundHandler,
        autoescape="xhtml_escape",
        debug=debug,
    )


def build_context(settings: Settings) -> ServeContext:
    """The service's shared state from the configuration (repository opened read-only in practice: the
    service never writes to it; the deployment restores into users' homes)."""
    from dr import wiring
    from dr.serve.audit import AuditLog

    def open_repo() -> tuple[Repository, Catalog]:
        repo = wiring.open_repository(settings)
        return repo, wiring.open_catalog(settings, repo)

    deployment = wiring.make_deployment(settings)
    s = settings.serve
    tz = ZoneInfo(s.timezone) if s.timezone else wiring.timezone(settings)
    # The audit records name the namespace on Kubernetes ("" locally). Not from describe(): that looks up
    # the hub's Deployment and Secret, which jdr serve's Role (cronjobs/serve/role.yaml) does not grant.
    audit = AuditLog(s.audit_log, wiring.make_webhooks(settings),
                     deployment=str(getattr(deployment, "namespace", "") or ""))
    return ServeContext(service=SelfService(open_repo, deployment), settings=s, tz=tz, audit=audit,
                        downloads=RateLimiter(s.downloads_per_hour), restores=RateLimiter(s.restores_per_hour))


def listen_address(ip: str | None, port: int | None) -> tuple[str, int]:
    """Where to listen: the options, else ``JUPYTERHUB_SERVICE_URL`` (set by the hub for a managed service),
    else 127.0.0.1:10101."""
    url = urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))
    return (ip or url.hostname or "127.0.0.1", port or url.port or 10101)
