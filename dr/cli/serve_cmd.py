"""``jdr serve``: the self-service restore service, run by the hub as a JupyterHub service
(docs/SELF-SERVICE.md)."""

from __future__ import annotations

import click

from dr.cli.main import Context, cli, pass_ctx


@cli.command()
@click.option("--ip", default=None, help="Address to listen on (default: from JUPYTERHUB_SERVICE_URL, else "
                                         "127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: from JUPYTERHUB_SERVICE_URL, else 10101).")
@pass_ctx
def serve(ctx: Context, ip: str | None, port: int | None) -> None:
    """Serve users' own backups to them through the hub: browse, search, preview, download, restore."""
    from dr.serve.server import run

    run(ctx.settings, ip=ip, port=port)
