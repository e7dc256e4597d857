"""companion bench SUITE"""

from __future__ import annotations

from pathlib import Path

import click

from companion.bench import report, write_json
from companion.cli import Ctx, cli, setup_logging

SUITES = ("models",)


@cli.command()
@click.argument("suite", type=click.Choice(SUITES))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Save the figures here.")
@click.option("--prompts", "n_prompts", type=click.IntRange(1, 200), default=5, show_default=True)
@click.pass_obj
def bench(obj: Ctx, suite: str, json_path: Path | None, n_prompts: int) -> None:
    """Run a benchmark suite; print its figures and optionally save them as JSON.

    Example: companion bench models --json r.json
    """
    settings = obj.settings()
    setup_logging("WARNING")
    from companion.bench import models as suite_models

    figures, notes = suite_models.run(settings, n_prompts=n_prompts)
    width = max((len(k) for k in figures), default=10)
    click.echo(f"bench {suite}")
    for name, value in figures.items():
        click.echo(f"  {name:{width}}  {value}")
    for name, value in notes.items():
        click.echo(f"  # {name}: {value}")
    if json_path:
        write_json(json_path, report(suite, figures, {"notes": notes}))
        click.echo(f"saved {json_path}")
