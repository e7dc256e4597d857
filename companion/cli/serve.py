"""companion serve"""

from __future__ import annotations

import signal
import socket

import click
import uvicorn

from companion.cli import Ctx, cli, setup_logging
from companion.errors import ConfigError
from companion.runtime import open_runtime
from companion.server.app import create_app
from companion.server.security import check_bind
from companion.server.shutdown import SHUTDOWN_GRACE_S, UVICORN_EXTRA_S


@cli.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 13443).")
@click.option(
    "--shutdown-grace", type=click.FloatRange(0, 600), default=SHUTDOWN_GRACE_S, show_default=True,
    help="Seconds open replies may run on after SIGTERM before they are interrupted.",
)
@click.pass_obj
def serve(obj: Ctx, host: str | None, port: int | None, shutdown_grace: float) -> None:
    """Serve the HTTP API.

    Example: companion serve --port 13443
    """
    settings = obj.settings(host=host, port=port)
    setup_logging(settings.log_level)
    check_bind(settings)
    check_port_free(settings.host, settings.port)  # before the model loads: one line, exit 1
    runtime = open_runtime(settings)  # model and database errors surface here, as one line
    click.echo(
        f"companion: {runtime.model_info.name} ({runtime.plan.selection.reason}); "
        f"listening on http://{settings.host}:{settings.port}",
        err=True,
    )
    # uvicorn handles SIGTERM/SIGINT itself (open streams get --shutdown-grace seconds to
    # finish, then are interrupted and marked so), then raises the signal again on its way out;
    # these handlers absorb that, so a clean shutdown closes the runtime and exits 0.
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    app = create_app(settings, runtime)
    app.state.shutdown_grace_s = shutdown_grace
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=int(shutdown_grace) + UVICORN_EXTRA_S,
        )
    finally:
        runtime.close()
    if stopped:
        click.echo(f"companion: stopped by {signal.Signals(stopped[0]).name}", err=True)


def check_port_free(host: str, port: int) -> None:
    """ConfigError when another process listens on host:port (no "listening" line first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server "
                "running there?); choose another port with --port or COMPANION_PORT",
                field="port",
            ) from None
