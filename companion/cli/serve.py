"""companion serve"""

from __future__ import annotations

import click
import uvicorn

from companion.cli import Ctx, cli, setup_logging
from companion.runtime import open_runtime
from companion.server.app import create_app
from companion.server.security import check_bind


@cli.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 13443).")
@click.pass_obj
def serve(obj: Ctx, host: str | None, port: int | None) -> None:
    """Serve the HTTP API.

    Example: companion serve --port 13443
    """
    settings = obj.settings(host=host, port=port)
    setup_logging(settings.log_level)
    check_bind(settings)
    runtime = open_runtime(settings)  # model and database errors surface here, as one line
    click.echo(
        f"companion: {runtime.model_info.name} ({runtime.plan.selection.reason}); "
        f"listening on http://{settings.host}:{settings.port}",
        err=True,
    )
    try:
        uvicorn.run(
            create_app(settings, runtime),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=10,
        )
    finally:
        runtime.close()
