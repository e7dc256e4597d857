"""companion memory list | search | add | edit | delete | history | cleanup | export | forget-user

These open the database and the embedding model only (no LLM), so they are quick.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from companion.cli import Ctx, cli
from companion.embed import load_embedder
from companion.errors import ConfigError
from companion.memory.service import MemoryService
from companion.personal import Personal, open_personal
from companion.storage import store_for
from companion.userdata import delete_user, export_user

USER = click.option("--user", "user_id", default="default", show_default=True, help="User id.")


@contextmanager
def personal_of(obj: Ctx) -> Iterator[Personal]:
    """The personal side over the configured database, closed afterwards."""
    settings = obj.settings()
    store = store_for(settings)
    personal = open_personal(settings, store, load_embedder() if settings.memory_enabled else None)
    try:
        yield personal
    finally:
        personal.close()
        store.close()


def _memory(personal: Personal) -> MemoryService:
    """The memory service, or a one-line error when memory is off."""
    if personal.memory is None:
        raise ConfigError("long-term memory is off (memory_enabled = false)")
    return personal.memory


def _show(rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
    """Print rows as JSON or one line each."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(line(row))
    if not rows:
        click.echo("(none)", err=True)


def _line(m: dict[str, Any]) -> str:
    """One memory in a line."""
    topics = ",".join(m["topics"])
    return f"{m['id']:>5}  {m['importance']:.2f}  {m['kind']:<10} {m['text']}  [{topics}]"


@cli.group()
def memory() -> None:
    """Long-term memories of each user."""


@memory.command("list")
@USER
@click.option("--topic", help="Only this topic (family, work, pets, ...).")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_cmd(obj: Ctx, user_id: str, topic: str | None, limit: int, as_json: bool) -> None:
    """A user's memories, most important first.

    Example: companion memory list --user alice --topic family
    """
    with personal_of(obj) as p:
        rows = [m.to_dict() for m in _memory(p).memories(user_id, limit, 0, topic)]
    _show(rows, as_json, _line)


@memory.command()
@click.argument("query")
@USER
@click.option("-k", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def search(obj: Ctx, query: str, user_id: str, k: int, as_json: bool) -> None:
    """What recall picks for QUERY, with the reasons.

    Example: companion memory search "where do I live" --user alice
    """
    with personal_of(obj) as p:
        rows = [r.to_dict() for r in _memory(p).recall(user_id, query, None, k)]
    _show(rows, as_json, lambda r: f"{r['score']:.3f}  {_line(r)}\n       {r['reasons']}")


@memory.command()
@click.argument("text")
@USER
@click.option("--importance", default=0.9, show_default=True, type=click.FloatRange(0, 1))
@click.pass_obj
def add(obj: Ctx, text: str, user_id: str, importance: float) -> None:
    """Store a memory as written.

    Example: companion memory add "Allergic to peanuts" --user alice
    """
    with personal_of(obj) as p:
        click.echo(_line(_memory(p).add(user_id, text, importance=importance).to_dict()))


@memory.command()
@click.argument("memory_id", type=int)
@USER
@click.option("--text")
@click.option("--importance", type=click.FloatRange(0, 1))
@click.pass_obj
def edit(obj: Ctx, memory_id: int, user_id: str, text: str | None,
         importance: float | None) -> None:
    """Change a memory's text or importance.

    Example: companion memory edit 12 --user alice --importance 1
    """
    if text is None and importance is None:
        raise click.UsageError("nothing to change: give --text and/or --importance")
    with personal_of(obj) as p:
        changed = _memory(p).edit(user_id, memory_id, text=text, importance=importance)
        click.echo(_line(changed.to_dict()))


@memory.command()
@click.argument("memory_id", type=int)
@USER
@click.pass_obj
def delete(obj: Ctx, memory_id: int, user_id: str) -> None:
    """Delete one memory.

    Example: companion memory delete 12 --user alice
    """
    with personal_of(obj) as p:
        _memory(p).delete(user_id, memory_id)
    click.echo(f"deleted memory {memory_id}")


@memory.command()
@USER
@click.option("--id", "memory_id", type=int, help="Only this memory.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(obj: Ctx, user_id: str, memory_id: int | None, as_json: bool) -> None:
    """Every ADD / UPDATE / DELETE / NONE of a user's memories.

    Example: companion memory history --user alice
    """
    with personal_of(obj) as p:
        rows = _memory(p).history(user_id, memory_id)
    _show(rows, as_json, _history_line)


def _history_line(h: dict[str, Any]) -> str:
    """One history row in a line."""
    return (f"{h['created_at'][:19]}  {h['event']:<6} #{h['memory_id']}  "
            f"{h['old_text'] or ''} -> {h['new_text'] or ''}  ({h['reason']})")


@memory.command()
@click.option("--user", "user_id", help="Only this user (default: everyone).")
@click.pass_obj
def cleanup(obj: Ctx, user_id: str | None) -> None:
    """Apply the cleanup policy now (memory_days_old, memory_min_importance, memory_max_per_user).

    Example: companion memory cleanup
    """
    with personal_of(obj) as p:
        click.echo(json.dumps(_memory(p).cleanup(user_id).to_dict()))


@memory.command()
@USER
@click.option("--out", type=click.Path(path_type=Path), help="Write here instead of stdout.")
@click.pass_obj
def export(obj: Ctx, user_id: str, out: Path | None) -> None:
    """Everything stored about a user, as JSON.

    Example: companion memory export --user alice --out alice.json
    """
    with personal_of(obj) as p:
        data = export_user(p.personas.store, p, user_id)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"saved {out}")
    else:
        click.echo(text)


@memory.command("forget-user")
@click.option("--user", "user_id", required=True, help="User id.")
@click.confirmation_option(prompt="Delete every session, message and memory of this user?")
@click.pass_obj
def forget_user(obj: Ctx, user_id: str) -> None:
    """Delete everything stored about a user.

    Example: companion memory forget-user --user alice --yes
    """
    with personal_of(obj) as p:
        counts = delete_user(p.personas.store, p, user_id)
    parts = [f"{n} {name.replace('_', ' ')}" for name, n in counts.items()]
    click.echo(f"deleted user {user_id} and everything stored about them: {', '.join(parts)}")
