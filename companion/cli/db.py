"""companion db backup | check"""

from __future__ import annotations

import json
from pathlib import Path

import click

from companion.cli import Ctx, cli
from companion.storage.backup import backup_sqlite, check_sqlite

MAX_LISTED = 20


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


@cli.group()
def db() -> None:
    """Back up and check the SQLite database (safe while the server runs)."""


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
