"""companion bench SUITE"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from companion.bench import report, write_json
from companion.bench.progress import showing
from companion.cli import Ctx, cli, setup_logging

# suite name -> module with run(settings, size) -> (figures, notes); size = workload scale
SUITES = {
    "cache": "companion.bench.cache",
    "engine": "companion.bench.engine",
    "load": "companion.bench.load",
    "memory": "companion.bench.memory",
    "models": "companion.bench.models",
    "openai": "companion.bench.openai_api",
    "scale": "companion.bench.scale",
    "user": "companion.bench.user",
}


SHARED_OPTIONS = {"database_url", "redis_url"}
SCALE_ONLY = {"apps", "servers", "slots", "server_cache_mb", "faults", "faults_only"}
SCALE_OPTIONS = {"users", "duration_s", "max_requests", "max_tokens", "think_s"} | SCALE_ONLY


@cli.command()
@click.argument("suite", type=click.Choice(sorted(SUITES)))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Save the figures here.")
@click.option(
    "--size", "scale", type=click.IntRange(1, 100000), help="Workload size (suite default)."
)
# bench load only (companion/bench/load.py)
@click.option("--users", type=click.IntRange(1, 1000), help="load: simulated users (64).")
@click.option(
    "--duration", "duration_s", type=click.FloatRange(1, 3600), help="load: seconds of load (180)."
)
@click.option("--max-requests", type=click.IntRange(1), help="load: cap on requests sent.")
@click.option("--max-tokens", type=click.IntRange(1, 8192), help="load: tokens per reply (48).")
@click.option(
    "--think", "think_s", type=click.FloatRange(0, 600), help="load: mean think time, s (1)."
)
@click.option(
    "--probe", "probe_s", type=click.FloatRange(0, 600),
    help="load: seconds of the decode probe before the load (20; 0 = none).",
)
@click.option("--host", help="load: loopback address for the server (127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="load: server port (a free one).")
# bench cache and memory: the shared backends, measured beside SQLite (figures named pg_*)
@click.option("--database-url", help="cache, memory: a PostgreSQL (pgvector) to measure too.")
@click.option("--redis-url", help="cache: a Redis for the exact layer, measured too.")
# bench scale only (companion/bench/scale.py; also --users, --duration, --max-tokens, --think)
@click.option("--apps", type=click.IntRange(1, 16), help="scale: app instances (2).")
@click.option("--servers", type=click.IntRange(1, 16), help="scale: llama-server processes (2).")
@click.option("--slots", type=click.IntRange(1, 256),
              help="scale: parallel slots per llama-server (4), each 2048 tokens of context.")
@click.option("--server-cache-mb", type=click.IntRange(0, 1 << 20),
              help="scale: each llama-server's host-RAM prompt cache, MiB (--cache-ram; its "
              "default 8192; 0 = a prompt is kept only while its slot's KV cells hold it).")
@click.option("--faults", is_flag=True, default=None,
              help="scale: a third pass with faults injected (kill -9, Redis, PostgreSQL).")
@click.option("--faults-only", is_flag=True, default=None,
              help="scale: only the pass with faults (no affinity / round robin comparison).")
@click.pass_obj
def bench(obj: Ctx, suite: str, json_path: Path | None, scale: int | None, **load: Any) -> None:
    """Run a benchmark suite; print its figures and optionally save them as JSON.

    Example: companion bench models --json r.json

    Example: companion bench load --users 64 --duration 180 --json load.json

    Example: companion bench scale --users 16 --duration 60 --json scale.json
    """
    given = {k: v for k, v in load.items() if v is not None}
    allowed = SHARED_OPTIONS if suite in ("cache", "memory") else set()
    if suite == "scale":
        allowed = SHARED_OPTIONS | SCALE_OPTIONS
    wrong = [k for k in given if k not in allowed] if suite != "load" else \
        [k for k in given if k in SHARED_OPTIONS | SCALE_ONLY]
    if wrong:
        name = wrong[0].removesuffix("_s").replace("_", "-")
        only_scale = wrong[0] in SCALE_ONLY
        where = ("bench cache, memory and scale" if wrong[0] in SHARED_OPTIONS
                 else "bench scale" if only_scale else "bench load or scale")
        raise click.UsageError(f"--{name} is for {where} only")
    settings = obj.settings()
    setup_logging("WARNING")
    module = importlib.import_module(SUITES[suite])
    with showing(f"bench {suite}: starting"):
        figures, notes = (
            module.run(settings, scale, **given) if given else module.run(settings, scale)
        )
    width = max((len(k) for k in figures), default=10)
    click.echo(f"bench {suite}")
    null = notes.get("null_figures") or {}
    for name, value in figures.items():
        shown = value if value is not None else f"null ({null.get(name, 'not measured')})"
        click.echo(f"  {name:{width}}  {shown}")
    for name, value in notes.items():
        click.echo(f"  # {name}: {value}")
    if json_path:
        write_json(json_path, report(suite, figures, {"notes": notes}))
        click.echo(f"saved {json_path}")
