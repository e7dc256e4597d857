"""companion db backup | check | migrate | copy"""

from __future__ import annotations

import json
from pathlib import Path

import click

from companion.cli import Ctx, cli
from companion.config import mask_url
from companion.storage.backup import backup_sqlite, check_sqlite
from companion.storage.copy import copy_database
from companion.storage.store import migrate_database

MAX_LISTED = 20


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


@cli.group()
def db() -> None:
    """Back up and check the SQLite database; migrate or copy to PostgreSQL."""


@db.command("backup")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace PATH if it already exists.")
@click.pass_obj
def backup(obj: Ctx, path: Path, force: bool) -> None:
    """Write a consistent copy of the database to PATH, then verify it.

    Example: companion db backup ~/backups/companion-$(date +%F).db
    """
    result = backup_sqlite(obj.settings().db_url, path, force=force)
    click.echo(f"backed up {result.source} to {result.path}: {_size(result.size_bytes)} "
               f"({result.size_bytes} bytes), {result.pages} pages in {result.seconds:.2f} s; "
               f"integrity_check {result.integrity}")


@db.command("check")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def check(obj: Ctx, as_json: bool) -> None:
    """Run integrity_check and foreign_key_check; show the schema revision and row counts.

    Exits 1 and lists the problems when the database is damaged.

    Example: companion db check
    """
    result = check_sqlite(obj.settings().db_url)
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "ok": result.ok,
                               "revision": result.revision, "head": result.head,
                               "counts": result.counts, "problems": result.problems}, indent=2))
    else:
        revision = result.revision or "none"
        if result.revision is not None:
            revision += " (head)" if result.revision == result.head else \
                f" (head is {result.head}; the server upgrades it on start)"
        click.echo(f"{'database':22} {result.path}")
        click.echo(f"{'revision':22} {revision}")
        for name, count in result.counts.items():
            click.echo(f"{name:22} {count}")
        click.echo(f"{'check':22} {'ok' if result.ok else 'FAILED'}")
    if result.ok:
        return
    for problem in result.problems[:MAX_LISTED]:
        click.echo(f"  {problem}", err=True)
    if len(result.problems) > MAX_LISTED:
        click.echo(f"  ... and {len(result.problems) - MAX_LISTED} more", err=True)
    raise click.ClickException(f"{result.path} failed the check: "
                               f"{len(result.problems)} problem(s) listed above")


@db.command("migrate")
@click.pass_obj
def migrate(obj: Ctx) -> None:
    """Upgrade the database schema to this version's head (PostgreSQL: under an advisory lock,
    so instances started together migrate once). Run it before serving a new version.

    Example: COMPANION_DATABASE_URL=postgresql+psycopg://companion@db/companion companion db migrate
    """
    settings = obj.settings()
    before, after = migrate_database(settings.db_url)
    shown = mask_url(settings.db_url)
    if before == after:
        click.echo(f"{shown}: already at revision {after}")
    else:
        click.echo(f"{shown}: migrated from revision {before or 'none'} to {after}")


@db.command("copy")
@click.option("--to", "target", required=True, metavar="URL",
              help="The empty database to copy into, e.g. postgresql+psycopg://host/companion.")
@click.pass_obj
def copy(obj: Ctx, target: str) -> None:
    """Copy every table of the configured database into URL and check the row counts.

    Example: companion db copy --to postgresql+psycopg://companion@127.0.0.1/companion
    """
    report = copy_database(obj.settings().db_url, target)
    total = sum(report.counts.values())
    click.echo(f"copied {total} rows from {report.source} to {mask_url(report.target)} in "
               f"{report.seconds:.1f} s; row counts match:")
    for name, count in report.counts.items():
        click.echo(f"  {name:22} {count}")
