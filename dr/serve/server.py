"""Running the service process: build the application, listen, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from dr.errors import ConfigError
from dr.serve.app import build_context, listen_address, make_app, service_prefix
from dr.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, *, ip: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT. Needs the JupyterHub service environment (the hub provides it)."""
    for name in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_CLIENT_ID"):
        if not os.environ.get(name):
            raise ConfigError(f"{name} is not set: `jdr serve` runs as a JupyterHub service",
                              hint="register it in the hub's services (docs/SELF-SERVICE.md); the hub "
                                   "starts it, or sets these for its Deployment")
    ctx = build_context(settings)
    host, p = listen_address(ip, port)
    asyncio.run(_serve(ctx, host, p))


async def _serve(ctx: object, host: str, port: int) -> None:
    app = make_app(ctx)  # type: ignore[arg-type]
    server = app.listen(port, address=host, xheaders=True)
    log.info("jdr serve: listening on http://%s:%d%s", host, port, service_prefix())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    log.info("jdr serve: stopped")
