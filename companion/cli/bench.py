"""companion bench SUITE"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from companion.bench import report, write_json
from companion.cli import Ctx, cli, setup_logging

# suite name -> module with run(settings, size) -> (figures, notes); size = workload scale
SUITES = {
    "cache": "companion.bench.cache",
    "engine": "companion.bench.engine",
    "memory": "companion.bench.memory",
    "models": "companion.bench.models",
}


@cli.command()
@click.argument("suite", type=click.Choice(sorted(SUITES)))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Save the figures here.")
@click.option("--size", "scale", type=click.IntRange(1, 100000), help="Workload size (suite default).")
@click.pass_obj
def bench(obj: Ctx, suite: str, json_path: Path | None, scale: int | None) -> None:
    """Run a benchmark suite; print its figures and optionally save them as JSON.

    Example: companion bench models --json r.json
    """
    settings = obj.settings()
    setup_logging("WARNING")
    module = importlib.import_module(SUITES[suite])
    figures, notes = module.run(settings, scale)
    width = max((len(k) for k in figures), default=10)
    click.echo(f"bench {suite}")
    for name, value in figures.items():
        click.echo(f"  {name:{width}}  {value}")
    for name, value in notes.items():
        click.echo(f"  # {name}: {value}")
    if json_path:
        write_json(json_path, report(suite, figures, {"notes": notes}))
        click.echo(f"saved {json_path}")
