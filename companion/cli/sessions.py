"""companion sessions list | show | rename | delete | search (on the configured database)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.markup import escape
from rich.table import Table

from companion.cli import Ctx, cli
from companion.cli.remote import print_table
from companion.errors import NotFound
from companion.storage import Store, store_for
from companion.storage import conversations as conv

USER = click.option("--user", "user_id", default="default", show_default=True, help="User id.")


@contextmanager
def store_of(obj: Ctx) -> Iterator[Store]:
    """The configured database, closed afterwards."""
    store = store_for(obj.settings())
    try:
        yield store
    finally:
        store.close()


@cli.group()
def sessions() -> None:
    """List, read, rename, delete and search your chat sessions."""


@sessions.command("list")
@USER
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.pass_obj
def list_sessions(obj: Ctx, user_id: str, limit: int) -> None:
    """A user's sessions, newest first.

    Example: companion sessions list --user alice
    """
    with store_of(obj) as store:
        found = store.list_sessions(user_id, limit)
    if not found:
        click.echo(f"no sessions for {user_id}")
        return
    table = Table("id", "title", "updated", box=None)
    for s in found:
        table.add_row(s.id, escape(s.title or "(untitled)"), f"{s.updated_at:%Y-%m-%d %H:%M}")
    print_table(table)


@sessions.command()
@click.argument("session_id")
@click.pass_obj
def show(obj: Ctx, session_id: str) -> None:
    """Print a session's conversation as it stands.

    Example: companion sessions show 3f2a...
    """
    with store_of(obj) as store:
        if store.get_session(session_id) is None:
            raise NotFound(f"no session {session_id!r}")
        shown = conv.active_messages(store, session_id)
    for m in shown:
        mark = " [stopped]" if m.status == "interrupted" else ""
        mark += " [cut at max_tokens]" if m.finish_reason == "length" else ""
        click.echo(f"{'you' if m.role == 'user' else 'companion'}> {m.text}{mark}")


@sessions.command()
@click.argument("session_id")
@click.argument("title")
@click.pass_obj
def rename(obj: Ctx, session_id: str, title: str) -> None:
    """Give a session a new title.

    Example: companion sessions rename 3f2a... "Trip to Lisbon"
    """
    with store_of(obj) as store:
        renamed = conv.rename_session(store, session_id, title)
    click.echo(f"renamed session {renamed.id}: {renamed.title}")


@sessions.command()
@click.argument("session_id")
@click.confirmation_option(prompt="Delete this session and all its messages?")
@click.pass_obj
def delete(obj: Ctx, session_id: str) -> None:
    """Delete a session and its messages.

    Example: companion sessions delete 3f2a... --yes
    """
    with store_of(obj) as store:
        count = conv.delete_session(store, session_id)
    click.echo(f"deleted session {session_id} ({count} messages)")


@sessions.command()
@click.argument("query")
@USER
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.pass_obj
def search(obj: Ctx, query: str, user_id: str, limit: int) -> None:
    """Search a user's messages (every word; the last one as a prefix).

    Example: companion sessions search "lisbon boat" --user alice
    """
    with store_of(obj) as store:
        hits = conv.search_messages(store, user_id, query, limit)
    if not hits:
        click.echo(f"nothing matches {query!r}")
        return
    table = Table("session", "title", "who", "text", box=None)
    for h in hits:
        text = escape(h.snippet).replace(conv.MARK_START, "[bold]").replace(conv.MARK_END, "[/]")
        table.add_row(h.session_id[:12], escape(h.session_title or ""), h.role, text)
    print_table(table)
