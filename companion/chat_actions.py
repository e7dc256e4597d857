"""Chat actions on stored messages: regenerate a reply (the old one kept as an alternative),
edit a message and resend it, continue a reply that was cut at max_tokens or stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from companion.chat import Companion
from companion.domain import ChatResult, Message, Usage
from companion.errors import InputError, NotFound
from companion.llm.base import GenerationDone, GenerationRequest
from companion.storage import conversations as conv
from companion.storage.store import history_start
from companion.turn import DEFAULT_USER, generate, options_from

ChatEvents = AsyncIterator[str | ChatResult]
CONTINUABLE = ("length", "cancelled")  # cut at max_tokens, or stopped by the user


class ChatActions:
    """Regenerate, edit-and-resend and continue, over one Companion."""

    def __init__(self, companion: Companion) -> None:
        self.companion = companion
        self.store = companion.store

    def message_of(self, message_id: int) -> tuple[Message, str]:
        """A message and the user it belongs to (NotFound when either is gone)."""
        msg = conv.get_message(self.store, message_id)
        session = self.store.get_session(msg.session_id)
        if session is None:
            raise NotFound(f"no message {message_id}", field="message_id")
        return msg, session.user_id

    def _last_exchange(self, reply: Message) -> tuple[Message, list[Message]]:
        """The user message a reply answers and the conversation before it; the reply must be
        the last message shown (only the newest reply can be regenerated or continued)."""
        shown = conv.active_messages(self.store, reply.session_id)
        if reply.role != "assistant" or not shown or shown[-1].id != reply.id:
            raise InputError(
                "only the last reply of a session can be regenerated or continued",
                field="message_id",
            )
        for i in range(len(shown) - 2, -1, -1):
            if shown[i].role == "user":
                return shown[i], shown[:i]
        raise InputError("this reply answers no message", field="message_id")

    async def regenerate(self, reply_id: int, **options: Any) -> ChatEvents:
        """A new reply to the same message; the old reply stays, as an alternative."""
        reply, user_id = await asyncio.to_thread(self.message_of, reply_id)
        turn = self.companion.in_turn(
            reply.session_id, lambda: self._regenerate(reply_id, user_id, options)
        )
        async with aclosing(turn):
            async for event in turn:
                yield event

    async def _regenerate(self, reply_id: int, user_id: str, options: dict[str, Any]) -> ChatEvents:
        """regenerate's work, inside the session's turn: retire the exchange, run the turn's
        steps on the same message (never from the cache), group the replies."""
        reply, _ = await asyncio.to_thread(self.message_of, reply_id)
        asked, _ = await asyncio.to_thread(self._last_exchange, reply)
        await asyncio.to_thread(conv.retire_from, self.store, reply.session_id, asked.id)
        group = reply.alt_group or reply.id
        new_id: int | None = None
        steps = self.companion.turn_steps(
            user_id, asked.text, reply.session_id, use_cache=False, **options
        )
        try:
            async with aclosing(steps):
                async for event in steps:
                    if isinstance(event, ChatResult):
                        new_id = event.message_id
                        event.extra["alt_group"] = group
                    yield event
        finally:
            await asyncio.to_thread(self._settle_regenerate, asked, reply, group, new_id)

    def _settle_regenerate(
        self, asked: Message, old: Message, group: int, new_id: int | None
    ) -> None:
        """Group the new reply (or the partial one a stop left) with the old one; with no new
        reply at all, the old exchange comes back as it was."""
        if new_id is None:
            shown = conv.active_messages(self.store, old.session_id)
            last = shown[-1] if shown else None
            new_id = last.id if last is not None and last.role == "assistant" else None
        if new_id is None:
            conv.retire_from(self.store, old.session_id, old.id + 1)
            conv.reactivate(self.store, [asked.id, old.id])
            return
        conv.group_replies(self.store, group, [old.id, new_id])

    async def edit(self, message_id: int, text: str, **options: Any) -> ChatEvents:
        """Replace one of the user's messages and answer it again; what followed is kept but
        leaves the conversation (and the prompt)."""
        msg, user_id = await asyncio.to_thread(self.message_of, message_id)
        if msg.role != "user" or not msg.active:
            raise InputError(
                "only a message you sent (still shown) can be edited", field="message_id"
            )
        self.companion.validate(text)  # before anything is retired
        turn = self.companion.in_turn(
            msg.session_id, lambda: self._edit(msg, user_id, text, options)
        )
        async with aclosing(turn):
            async for event in turn:
                yield event

    async def _edit(
        self, msg: Message, user_id: str, text: str, options: dict[str, Any]
    ) -> ChatEvents:
        """edit's work, inside the session's turn: retire from the message on, then the turn's
        steps."""
        await asyncio.to_thread(conv.retire_from, self.store, msg.session_id, msg.id)
        steps = self.companion.turn_steps(user_id, text, msg.session_id, **options)
        async with aclosing(steps):
            async for event in steps:
                yield event

    async def continue_reply(self, reply_id: int, **options: Any) -> ChatEvents:
        """Generate more of a reply cut at max_tokens (or stopped), appended to the same one;
        a turn of its session like any other (one at a time: Companion.in_turn)."""
        reply, _ = await asyncio.to_thread(self.message_of, reply_id)
        turn = self.companion.in_turn(reply.session_id, lambda: self._continue(reply_id, options))
        async with aclosing(turn):
            async for event in turn:
                yield event

    async def _continue(self, reply_id: int, options: dict[str, Any]) -> ChatEvents:
        """continue_reply's work, inside the session's turn."""
        started = time.perf_counter()
        reply, user_id = await asyncio.to_thread(self.message_of, reply_id)
        asked, before = await asyncio.to_thread(self._last_exchange, reply)
        if reply.finish_reason not in CONTINUABLE:
            raise InputError(
                "this reply is complete: only a reply cut at max_tokens or "
                "stopped can be continued",
                field="message_id",
            )
        engine = self.companion.engine
        engine.check_serving()
        opts = options_from(self.companion.settings, **options)
        system = await asyncio.to_thread(self.companion.system_prompt_for, user_id or DEFAULT_USER)
        tokens = self._prompt(
            system, before, asked, reply, engine.info.context_length - opts.max_tokens
        )
        request = GenerationRequest(tokens, opts, session_key=reply.session_id)

        def settle(_status: str, pieces: list[str]) -> None:  # what came is kept, as stopped
            if pieces:
                conv.extend_reply(
                    self.store,
                    reply.id,
                    "".join(pieces),
                    asked_id=asked.id,
                    finish_reason="cancelled",
                    tokens=len(pieces),
                    timings={},
                )

        done: GenerationDone | None = None
        events = generate(
            engine, request, self.companion.settings.request_timeout_s, settle, "continuation"
        )
        async with aclosing(events):
            async for event in events:
                if isinstance(event, GenerationDone):
                    done = event
                else:
                    yield event
        assert done is not None
        timings = {**done.timings, "total_ms": round((time.perf_counter() - started) * 1000, 2)}
        stored = await asyncio.to_thread(
            conv.extend_reply,
            self.store,
            reply.id,
            done.text,
            asked_id=asked.id,
            finish_reason=done.finish_reason,
            tokens=done.completion_tokens,
            timings=timings,
        )
        yield ChatResult(
            response=stored.text,
            session_id=reply.session_id,
            user_id=user_id,
            cached=False,
            model=engine.info.name,
            usage=Usage(done.prompt_tokens, done.completion_tokens),
            timings=timings,
            finish_reason=done.finish_reason,
            message_id=reply.id,
        )

    def _prompt(
        self, system: str, before: list[Message], asked: Message, reply: Message, budget: int
    ) -> list[int]:
        """The chat so far, ending inside the reply (no end-of-turn), oldest turns dropped to
        fit the budget."""
        engine = self.companion.engine
        settings = self.companion.settings
        turns = [{"role": m.role, "content": m.text} for m in before if m.status == "complete"]
        window = settings.history_messages
        turns = turns[history_start(len(turns), window, settings.history_step) :] if window else []
        head = [{"role": "system", "content": system}]
        ask = [{"role": "user", "content": asked.text}]
        tokens: list[int] = []
        for start in range(len(turns) + 1):
            if start < len(turns) and turns[start]["role"] == "assistant":
                continue
            text = engine.render_chat(head + turns[start:] + ask) + reply.text
            tokens = engine.tokenize(text)
            if len(tokens) <= budget:
                return tokens
        raise InputError(
            f"the reply is too long to continue: {len(tokens)} prompt tokens, {budget} allowed",
            field="message_id",
        )
