"""companion config show | stats"""

from __future__ import annotations

import json

import click
import httpx

from companion.cli import Ctx, cli
from companion.config import config_path
from companion.errors import CompanionError


@cli.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def config_show(obj: Ctx, as_json: bool) -> None:
    """Print the effective settings (flags > env > TOML file > preset > defaults).

    Example: companion --preset production config show
    """
    settings = obj.settings()
    values = settings.public_dict()
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    click.echo(f"# settings file: {config_path(obj.config, settings.data_dir)}")
    for key, value in values.items():
        shown = value if len(str(value)) < 100 else str(value)[:97] + "..."
        click.echo(f"{key} = {json.dumps(shown)}")


def server_url(obj: Ctx) -> str:
    s = obj.settings()
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    return f"http://{host}:{s.port}"


def call_server(obj: Ctx, method: str, path: str, body: dict[str, object] | None = None) -> object:
    """Call the running server; a one-line error when none is running."""
    url = server_url(obj) + path
    try:
        resp = httpx.request(method, url, json=body, timeout=600)
    except httpx.HTTPError as exc:
        raise CompanionError(
            f"no companion server at {server_url(obj)} ({exc.__class__.__name__})"
        ) from None
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:200]
        raise CompanionError(f"server answered {resp.status_code}: {message}")
    return resp.json()


@cli.command()
@click.pass_obj
def stats(obj: Ctx) -> None:
    """Performance figures of the running server (get_performance_stats()).

    Example: companion stats
    """
    click.echo(json.dumps(call_server(obj, "GET", "/api/v1/stats"), indent=2))
