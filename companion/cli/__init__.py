"""The `companion` command. Commands parse and format; the runtime does the work."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from companion import __version__
from companion.config import Settings, load_settings
from companion.errors import CompanionError
from companion.storage.faults import storage_error


class CompanionGroup(click.Group):
    """Turns CompanionError (and a database fault: disk full, read-only, locked, I/O) into a
    one-line message and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CompanionError as exc:
            raise click.ClickException(exc.message) from None
        except OperationalError as exc:
            error = storage_error(exc)
            if error is None:
                raise
            raise click.ClickException(error.message) from None
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)


class Ctx:
    """Global flags, turned into settings on first use."""

    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None

    def settings(self, **more: Any) -> Settings:
        if more or self._settings is None:
            self._settings = load_settings(self.config, **{**self.overrides, **more})
        return self._settings


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("companion").setLevel(level)


@click.group(cls=CompanionGroup)
@click.version_option(__version__, prog_name="companion")
@click.option("--config", type=click.Path(path_type=Path), help="TOML settings file.")
@click.option("--preset", help="low-resource | high-performance | production")
@click.option("--model-size", help="auto | tiny | base | small | medium | large")
@click.option("--model-path", type=click.Path(path_type=Path), help="A GGUF file to load.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the database lives.")
@click.option("--context-length", type=int)
@click.option("--max-tokens", type=int)
@click.option("--temperature", type=float)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.pass_context
def cli(ctx: click.Context, config: Path | None, **overrides: Any) -> None:
    """A self-hosted AI companion that runs a local LLM and remembers you.

    Example: companion ask "Hello, who are you?"
    """
    ctx.obj = Ctx(config, overrides)


def main() -> None:
    cli(prog_name="companion")


from companion.cli import (  # noqa: E402
    bench,
    cache,
    chat,
    config,
    db,
    keys,
    memory,
    models,
    persona,
    report,
    serve,
    sessions,
)

__all__ = [
    "bench", "cache", "chat", "cli", "config", "db", "keys", "main", "memory", "models",
    "persona", "report", "serve", "sessions",
]
