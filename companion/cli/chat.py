"""companion chat | ask: talk to the companion in the terminal (embedded, no server needed).

In `chat`, Ctrl-C while a reply is written stops it (the partial reply is kept, marked
interrupted); Ctrl-C at the prompt quits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator

import click

from companion.chat import Companion
from companion.chat_actions import ChatActions
from companion.cli import Ctx, cli, setup_logging
from companion.cli.remote import print_table, stats_table
from companion.domain import ChatResult
from companion.runtime import open_runtime

HELP = (
    "commands: /new (new session), /continue (more of a cut reply), /regenerate, "
    "/stats, /help, /quit · Ctrl-C stops a reply; at the prompt it quits"
)


async def print_stream(events: AsyncIterator[str | ChatResult], echo: bool = True) -> ChatResult:
    """Print a reply as it is generated; return the result. Closing it (Ctrl-C) closes the
    turn, which keeps the partial reply as interrupted."""
    result: ChatResult | None = None
    try:
        async for event in events:
            if isinstance(event, ChatResult):
                result = event
            elif echo:
                click.echo(event, nl=False)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert result is not None
    if echo:
        click.echo()
    return result


async def stream_reply(
    companion: Companion, user: str | None, message: str, session: str | None, echo: bool = True
) -> ChatResult:
    """Print the reply to `message` as it is generated; return the result."""
    return await print_stream(companion.chat_stream(user, message, session), echo)


def footer(result: ChatResult) -> str:
    t = result.timings
    cut = " · cut at max_tokens: /continue for more" if result.finish_reason == "length" else ""
    return (
        f"[{result.model} · session {result.session_id} · "
        f"{result.usage.completion_tokens} tokens · "
        f"{t.get('tokens_per_second', 0):.1f} tok/s · {t.get('total_ms', 0):.0f} ms{cut}]"
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
    """Talk with the companion; replies stream as they are written. Ctrl-C stops a reply.

    Example: companion chat --user alice
    """
    settings = obj.settings()
    setup_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    runtime = open_runtime(settings)
    click.echo(f"companion ({runtime.model_info.name}). {HELP}", err=True)
    loop = asyncio.new_event_loop()
    try:
        Repl(runtime.companion, loop, user_id, session_id).run()
    finally:
        loop.close()
        runtime.close()


class Repl:
    """The chat loop: input in the main thread, each reply a task Ctrl-C can cancel."""

    def __init__(self, companion: Companion, loop: asyncio.AbstractEventLoop,
                 user_id: str | None, session_id: str | None) -> None:  # fmt: skip
        self.companion = companion
        self.loop = loop
        self.user_id = user_id
        self.session = session_id
        self.last: ChatResult | None = None

    def run(self) -> None:
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                click.echo()
                return
            except KeyboardInterrupt:  # at the prompt: quit
                click.echo("\n(bye)", err=True)
                return
            if line in ("/quit", "/exit", "/q"):
                return
            if line:
                self.command(line)

    def command(self, line: str) -> None:
        """One line: a slash command, or a message to answer."""
        if line == "/new":
            self.session, self.last = None, None
            click.echo("(new session)", err=True)
        elif line == "/stats":
            print_table(stats_table(self.companion.get_performance_stats()))
        elif line in ("/continue", "/regenerate"):
            if self.last is None or self.last.message_id is None:
                click.echo("(no reply to work on yet)", err=True)
                return
            actions = ChatActions(self.companion)
            act = actions.continue_reply if line == "/continue" else actions.regenerate
            self.reply(act(self.last.message_id))
        elif line.startswith("/"):
            click.echo(HELP, err=True)
        else:
            self.session = self.session or uuid.uuid4().hex  # known even if stopped at once
            self.reply(self.companion.chat_stream(self.user_id, line, self.session))

    def reply(self, events: AsyncIterator[str | ChatResult]) -> None:
        """Print one streamed reply; Ctrl-C cancels it and keeps what was written."""
        click.echo("companion> ", nl=False)
        task = self.loop.create_task(print_stream(events))
        self.loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            self.last = self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            click.echo("\n[stopped: the partial reply is kept; Ctrl-C again to quit]", err=True)
            return
        except Exception as exc:  # one line, and the chat goes on
            click.echo(f"\nerror: {getattr(exc, 'message', None) or exc}", err=True)
            return
        finally:
            self.loop.remove_signal_handler(signal.SIGINT)
        click.echo(footer(self.last), err=True)
