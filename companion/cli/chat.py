"""companion chat | ask: talk to the companion in the terminal (embedded, no server needed)."""

from __future__ import annotations

import asyncio
import json

import click

from companion.chat import Companion
from companion.cli import Ctx, cli, setup_logging
from companion.domain import ChatResult
from companion.runtime import open_runtime

HELP = "commands: /new (new session), /stats, /help, /quit"


async def stream_reply(
    companion: Companion, user: str | None, message: str, session: str | None, echo: bool = True
) -> ChatResult:
    """Print the reply as it is generated; return the result."""
    result: ChatResult | None = None
    async for event in companion.chat_stream(user, message, session):
        if isinstance(event, ChatResult):
            result = event
        elif echo:
            click.echo(event, nl=False)
    assert result is not None
    if echo:
        click.echo()
    return result


def footer(result: ChatResult) -> str:
    t = result.timings
    return (
        f"[{result.model} · session {result.session_id} · "
        f"{result.usage.completion_tokens} tokens · "
        f"{t.get('tokens_per_second', 0):.1f} tok/s · {t.get('total_ms', 0):.0f} ms]"
    )


@cli.command()
@click.argument("message")
@click.option("--user", "user_id", help="User id (default: default).")
@click.option("--session", "session_id", help="Continue this session.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.pass_obj
def ask(obj: Ctx, message: str, user_id: str | None, session_id: str | None, as_json: bool) -> None:
    """Ask one question; the reply streams to stdout.

    Example: companion ask "What should I cook tonight?"
    """
    settings = obj.settings()
    setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    runtime = open_runtime(settings)
    try:
        result = asyncio.run(
            stream_reply(runtime.companion, user_id, message, session_id, echo=not as_json)
        )
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(footer(result), err=True)


@cli.command()
@click.option("--user", "user_id", help="User id (default: default).")
@click.option("--session", "session_id", help="Resume this session.")
@click.pass_obj
def chat(obj: Ctx, user_id: str | None, session_id: str | None) -> None:
    """Talk with the companion; replies stream as they are written.

    Example: companion chat --user alice
    """
    settings = obj.settings()
    setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    runtime = open_runtime(settings)
    click.echo(f"companion ({runtime.model_info.name}). {HELP}", err=True)
    try:
        asyncio.run(_repl(runtime.companion, user_id, session_id))
    finally:
        runtime.close()


async def _repl(companion: Companion, user_id: str | None, session_id: str | None) -> None:
    session = session_id
    while True:
        try:
            line = (await asyncio.to_thread(input, "you> ")).strip()
        except EOFError:
            click.echo()
            return
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            return
        if line == "/new":
            session = None
            click.echo("(new session)", err=True)
        elif line == "/stats":
            click.echo(json.dumps(companion.get_performance_stats(), indent=2))
        elif line == "/help" or line.startswith("/"):
            click.echo(HELP, err=True)
        else:
            click.echo("companion> ", nl=False)
            result = await stream_reply(companion, user_id, line, session)
            session = result.session_id
            click.echo(footer(result), err=True)
