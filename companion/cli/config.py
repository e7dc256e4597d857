"""companion config show | stats"""

from __future__ import annotations

import json

import click

from companion.cli import Ctx, cli
from companion.cli.remote import print_table, remote, stats_table, url_option
from companion.config import config_path


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


@cli.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
@click.pass_obj
def stats(obj: Ctx, url: str | None, key: str | None, as_json: bool) -> None:
    """Performance figures of the running server (get_performance_stats()).

    Example: companion stats --url http://127.0.0.1:13443
    """
    figures = remote(obj, url, key, timeout=30).call("GET", "/api/v1/stats")
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        print_table(stats_table(figures))
