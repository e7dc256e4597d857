"""companion persona list | show | create | edit | delete | select | import | export"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from companion.cli import Ctx, cli
from companion.cli.memory import personal_of
from companion.errors import InputError
from companion.persona.card import to_card, write_png_card
from companion.persona.model import TRAITS, persona_from
from companion.persona.prompt import system_prompt


def _traits(pairs: tuple[str, ...]) -> dict[str, float] | None:
    """--trait warmth=0.8 pairs as a dict (None when none given)."""
    if not pairs:
        return None
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise InputError(f"--trait wants NAME=0..1, got {pair!r}", field="traits") from exc
    return out


def _fields(**given: Any) -> dict[str, Any]:
    """The options that were given, as persona fields."""
    given["traits"] = _traits(given.pop("trait"))
    examples = given.pop("example")
    given["example_lines"] = list(examples) if examples else None
    return {k: v for k, v in given.items() if v is not None}


def persona_options(f: Any) -> Any:
    """The options shared by create and edit."""
    for option in reversed([
        click.option("--name"),
        click.option("--description"),
        click.option("--trait", multiple=True, help=f"NAME=0..1; names: {', '.join(TRAITS)}"),
        click.option("--style", "speaking_style", help="How it speaks."),
        click.option("--example", multiple=True, help="An example line (repeatable)."),
        click.option("--greeting"),
    ]):
        f = option(f)
    return f


@cli.group()
def persona() -> None:
    """Personas: who the companion is, per user."""


@persona.command("list")
@click.pass_obj
def list_cmd(obj: Ctx) -> None:
    """Every persona.

    Example: companion persona list
    """
    with personal_of(obj) as p:
        for item in p.personas.all():
            traits = " ".join(f"{k}={v:g}" for k, v in item.traits.items())
            click.echo(f"{item.id:<20} {item.name:<16} {traits}")


@persona.command()
@click.argument("persona_id")
@click.pass_obj
def show(obj: Ctx, persona_id: str) -> None:
    """A persona and the system prompt it writes.

    Example: companion persona show default
    """
    with personal_of(obj) as p:
        item = p.personas.get(persona_id)
    click.echo(json.dumps(item.to_dict(), indent=2))
    click.echo("\n" + system_prompt(item))


@persona.command()
@click.option("--id", "persona_id", help="Id (default: from the name).")
@persona_options
@click.pass_obj
def create(obj: Ctx, /, persona_id: str | None, **given: Any) -> None:
    """Create a persona.

    Example: companion persona create --name Max --trait humor=0.9 --trait verbosity=0.2
    """
    data = _fields(**given)
    with personal_of(obj) as p:
        made = p.personas.create(persona_from(data, persona_id=persona_id))
    click.echo(f"created persona {made.id}")


@persona.command()
@click.argument("persona_id")
@persona_options
@click.pass_obj
def edit(obj: Ctx, /, persona_id: str, **given: Any) -> None:
    """Change a persona (traits merge).

    Example: companion persona edit max --trait warmth=0.9
    """
    with personal_of(obj) as p:
        p.personas.update(persona_id, _fields(**given))
    click.echo(f"updated persona {persona_id}")


@persona.command()
@click.argument("persona_id")
@click.pass_obj
def delete(obj: Ctx, persona_id: str) -> None:
    """Delete a persona.

    Example: companion persona delete max
    """
    with personal_of(obj) as p:
        p.personas.delete(persona_id)
    click.echo(f"deleted persona {persona_id}")


@persona.command()
@click.argument("persona_id")
@click.option("--user", "user_id", default="default", show_default=True)
@click.pass_obj
def select(obj: Ctx, persona_id: str, user_id: str) -> None:
    """Choose the persona a user talks to.

    Example: companion persona select max --user alice
    """
    with personal_of(obj) as p:
        rel = p.personas.select(user_id, persona_id)
    click.echo(f"user {user_id} now talks to {persona_id} ({rel.to_dict()['stage']})")


@persona.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "persona_id", help="Id (default: from the card).")
@click.pass_obj
def import_cmd(obj: Ctx, path: Path, persona_id: str | None) -> None:
    """Import a SillyTavern Character Card V2 (JSON, or PNG with a 'chara' chunk).

    Example: companion persona import seraphina.png
    """
    with personal_of(obj) as p:
        made = p.personas.import_card(path.read_bytes(), persona_id)
    click.echo(f"imported persona {made.id} ({made.name})")


@persona.command("export")
@click.argument("persona_id")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def export_cmd(obj: Ctx, persona_id: str, path: Path) -> None:
    """Export as a Character Card V2: PNG when PATH ends in .png, else JSON.

    Example: companion persona export max max.png
    """
    with personal_of(obj) as p:
        card = to_card(p.personas.get(persona_id))
    if path.suffix.lower() == ".png":
        path.write_bytes(write_png_card(card))
    else:
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"saved {path}")
