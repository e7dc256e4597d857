"""One OpenAI API turn whose conversation is the client's `messages` (the default mode).

Companion adds its persona and the user's recalled memories around the client's messages
(each can be turned off per request), generates `n` choices from one prefill, stores the
exchange in the conversation's session (lineage.py) and lets the memory learn from the user's
new turn once: a resent or regenerated turn is not learned again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from companion.context import BuiltContext, fit_context
from companion.domain import GenerationOptions, Message, Usage
from companion.errors import Overloaded
from companion.llm.base import Engine, GenerationDone, GenerationRequest, TokenLogprob
from companion.memory.base import Recalled
from companion.memory.service import MemoryService
from companion.openai_compat import lineage
from companion.openai_compat.grammar import OutputFormat, Tools
from companion.openai_compat.notes import (
    Anchored,
    Note,
    anchors_of,
    earlier_notes,
    norm,
    said_elsewhere,
    turn_digests,
    with_notes,
)
from companion.openai_compat.prompt import layout
from companion.persona.prompt import sampling, system_prompt
from companion.personal import TurnNotes, memory_line, split_budget
from companion.turn import admitted, options_from, settling, title_of

if TYPE_CHECKING:
    from companion.cache import CacheHit
    from companion.chat import Companion

# The spec's "Creative Requests: always unique": never served from the cache when sampled.
CREATIVE = re.compile(
    r"\b(joke|story|stories|poem|poetry|haiku|limerick|song|lyrics|riddle|fun fact|surprise me|"
    r"random|imagine|invent|make up|brainstorm|creative|fiction|tale|rap)\b",
    re.IGNORECASE,
)


def is_creative(text: str) -> bool:
    """True when the message asks for something made up (a joke, a story, a fun fact...)."""
    return bool(CREATIVE.search(text))


@dataclass
class ClientRequest:
    """A chat request in engine terms (built by the route from OpenAI's parameters)."""

    user_id: str
    messages: list[dict[str, str]]  # the client's turns, the last one included
    options: dict[str, Any] = field(default_factory=dict)  # GenerationOptions overrides
    n: int = 1
    logprobs: int | None = None  # alternatives per token; None: no logprobs
    output: OutputFormat = field(default_factory=OutputFormat)
    tools: Tools | None = None
    memory: bool = True
    persona: bool = True
    use_cache: bool = True
    grammar: str | None = None  # GBNF of the tool calls or the JSON format (checked)
    kv_key: str | None = None  # prompt_cache_key: the KV-cache sequence to (re)use
    session_id: str | None = None  # the server keeps the history (X-Session-Id)
    # session mode: the stored history (messages[len(system):-1]) and, by message index, the
    # notes block anchored at each of its user turns (Companion.anchors)
    history: list[Message] = field(default_factory=list)
    blocks: dict[int, str] = field(default_factory=dict)

    def new_text(self) -> str:
        """What the user says this turn (the last message's text)."""
        return self.messages[-1]["content"]


@dataclass
class Piece:
    """Text of choice `index` as it is generated."""

    index: int
    text: str
    model: str = ""  # the model that wrote it (the routed one); "" where unknown


@dataclass
class TurnResult:
    """Every choice and the figures of the turn."""

    choices: list[GenerationDone]
    session_id: str
    user_id: str
    cached: bool
    model: str
    usage: Usage
    timings: dict[str, float]
    message_id: int | None
    learned: bool  # the memory learned from this turn (false for a resend, or memory off)
    context: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Recall:
    """This turn's memory notes and the earlier turns' (notes.py)."""

    recalled: list[Recalled]  # newly recalled for this turn (marked used once it is learned)
    current: tuple[Note, ...]  # the notes that go before the last message
    earlier: Anchored
    digests: list[str | None]  # the anchor of each user turn of the client's messages


NO_NOTES = Anchored({}, frozenset())
NO_RECALL = Recall([], (), NO_NOTES, [])


@dataclass
class Turn:
    """What the steps of one turn share."""

    req: ClientRequest
    text: str
    started: float
    seen: lineage.Lineage
    session_id: str
    engine: Engine
    opts: GenerationOptions
    built: BuiltContext
    learn: TurnNotes | None  # the notes the memory learns with (None: it does not learn)
    vector: Any = None
    probe: Any = None
    hit: CacheHit | None = None


class ClientTurns:
    """Runs client-conversation turns with the companion's store, engine, memory and cache."""

    def __init__(self, companion: Companion) -> None:
        self.c = companion
        self.anchors = anchors_of(companion)

    def stream(self, req: ClientRequest) -> AsyncIterator[Piece | TurnResult]:
        """Pieces of every choice as they come, then the TurnResult; a turn of a session the
        client names (X-Session-Id) holds that session's turn (Companion.in_turn)."""
        return self.c.in_turn(req.session_id, lambda: self._stream(req))

    async def _stream(self, req: ClientRequest) -> AsyncIterator[Piece | TurnResult]:
        """stream's work, as named steps."""
        turn = await self._prepare(req)
        if self._cacheable(turn):
            turn.probe, turn.hit = await self.c.lookup(
                req.user_id, turn.text, turn.opts, turn.built, turn.vector, True, turn.engine
            )
        elif self.c.cache is not None and self.c.settings.enable_caching:
            self.c.cache.count_bypass()
        if turn.hit is not None:
            yield Piece(0, turn.hit.entry.response, turn.hit.entry.model)
            yield await self._serve_hit(turn)
            return
        async for event in self._generate(turn):
            yield event

    async def _prepare(self, req: ClientRequest) -> Turn:
        """The session, the model, persona and memory notes, the options and the prompt."""
        c, started = self.c, time.perf_counter()
        text = c.validate(req.new_text())
        c.engine.check_serving()
        seen = await self._lineage(req)
        first_user = next((m["content"] for m in req.messages if m["role"] == "user"), text)
        session = await asyncio.to_thread(
            c.store.create_session, req.user_id, seen.session_id, title_of(first_user)
        )
        if req.session_id is not None:  # the server's history between the client's system
            req = await self._with_history(req, session.id)  # messages and its last message
        engine = c.choose_route(text, []).engine
        vector = await c.embed(text) if req.memory or req.use_cache else None
        notes, recall = await asyncio.to_thread(self._notes, req, session.id, text, vector)
        sampled = notes.sampling if notes is not None and req.persona else {}
        opts = options_from(c.settings, **{**sampled, **req.options})
        built = self._context(req, notes, recall, engine, opts)
        learn = None
        if notes is not None and req.memory and not seen.seen:
            learn = replace(notes, memories=recall.recalled[: built.memories_used])
        return Turn(req, text, started, seen, session.id, engine, opts, built, learn, vector)

    async def _serve_hit(self, turn: Turn) -> TurnResult:
        """A cached reply: stored as this turn's exchange, learned from once."""
        c, req, hit = self.c, turn.req, turn.hit
        assert hit is not None
        cached = await c.serve_cached(req.user_id, turn.session_id, turn.text, hit, turn.learn,
                                       {}, turn.started)  # fmt: skip
        await asyncio.to_thread(lineage.record, c.store, req.user_id, turn.seen, cached.message_id)
        done = GenerationDone(
            hit.entry.response, len(turn.built.prompt_tokens), hit.entry.completion_tokens,
            hit.entry.finish_reason,
        )  # fmt: skip
        return self._result(turn, [done], cached.model, cached.timings, True, cached.message_id)

    async def _generate(self, turn: Turn) -> AsyncIterator[Piece | TurnResult]:
        """Every choice from the model; the exchange is marked failed or interrupted when it
        does not complete."""
        c, req, engine = self.c, turn.req, turn.engine
        # session mode builds the chat API's prompt, so it uses the chat API's KV sequence
        own = f"oa-{req.user_id}-{turn.session_id}" if req.session_id is None else turn.session_id
        key = req.kv_key or own
        request = GenerationRequest(turn.built.prompt_tokens, turn.opts, key,
                                    route_key=turn.session_id)  # fmt: skip
        created = turn.session_id if turn.seen.new else None
        async with admitted(engine, request, c.store, created):  # 429: nothing stays
            user_msg = await asyncio.to_thread(
                c.store.add_message, turn.session_id, "user", turn.text, status="pending",
                token_count=engine.count_tokens(turn.text),
            )  # fmt: skip
            if req.session_id is not None and (block := turn.built.notes) is not None:
                c.anchors.put(user_msg.id, block)  # where the chat API's next turn looks

            def settle(status: str, first: list[str]) -> None:
                c.fail(user_msg.id, status, first, engine.info.name)

            async with settling(c.settings.request_timeout_s, settle) as (first, bound):
                choices = generate_choices(engine, turn.built.prompt_tokens, turn.opts, req.n,
                                           key, req.grammar, req.logprobs,
                                           route_key=turn.session_id,
                                           server=request.server)  # fmt: skip
                async for event in bound(choices):
                    if isinstance(event, Piece):
                        if event.index == 0:
                            first.append(event.text)
                        yield event
                    else:
                        dones = event
        yield await self._finish(turn, dones, user_msg)

    async def _finish(self, turn: Turn, dones: list[GenerationDone], user_msg: Any) -> TurnResult:
        """Store the exchange (the first choice), cache it, learn once, count it."""
        c, req, done, model = self.c, turn.req, dones[0], turn.engine.info.name
        timings = {**done.timings,
                   "total_ms": round((time.perf_counter() - turn.started) * 1000, 2)}  # fmt: skip
        reply = await asyncio.to_thread(
            c.store.complete_exchange, user_msg.id, done.text, user_tokens=user_msg.token_count,
            reply_tokens=done.completion_tokens, model=model, cached=False,
            timings=timings, finish_reason=done.finish_reason,
        )  # fmt: skip
        complete = done.text.strip() and done.finish_reason in ("stop", "length")
        if turn.probe is not None and complete:
            await asyncio.to_thread(
                c.cache.store, turn.probe, done.text, model=model,  # type: ignore[union-attr]
                prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                finish_reason=done.finish_reason,
            )  # fmt: skip
        if turn.learn is not None and c.personal is not None:
            await asyncio.to_thread(c.personal.after_turn, req.user_id, turn.session_id,
                                    req.new_text(), user_msg.id, turn.learn)  # fmt: skip
        await asyncio.to_thread(lineage.record, c.store, req.user_id, turn.seen, user_msg.id)
        c.stats.record_request(
            response_ms=timings["total_ms"],
            ttft_ms=timings.get("time_to_first_token_ms", 0.0),
            tokens_per_s=timings.get("tokens_per_second", 0.0),
            prompt=done.prompt_tokens,
            completion=sum(d.completion_tokens for d in dones),
        )
        return self._result(turn, dones, model, timings, False, reply.id)

    def _result(self, turn: Turn, dones: list[GenerationDone], model: str,
                timings: dict[str, float], cached: bool, message_id: int | None
                ) -> TurnResult:  # fmt: skip
        usage = Usage(len(turn.built.prompt_tokens), sum(d.completion_tokens for d in dones))
        return TurnResult(dones, turn.session_id, turn.req.user_id, cached, model, usage, timings,
                          message_id, turn.learn is not None, turn.built.messages)  # fmt: skip

    async def _lineage(self, req: ClientRequest) -> lineage.Lineage:
        """The session: named by the client, or the conversation's (lineage.py)."""
        if req.session_id is not None:
            return lineage.Lineage(req.session_id, "", False)
        return await asyncio.to_thread(lineage.resolve, self.c.store, req.user_id, req.messages)

    async def _with_history(self, req: ClientRequest, session_id: str) -> ClientRequest:
        """Session mode: the stored history replaces the client's turns before its last, each
        user turn with the notes block its own turn carried (anchored by message id, by either
        API), so that both APIs build one prompt for one session and share its KV cache."""

        def read() -> tuple[list[Message], dict[int, str]]:  # anchors may be in Redis
            history = self.c.store.recent_messages(
                session_id, self.c.settings.history_messages, step=self.c.settings.history_step
            )
            offset = len(system)
            blocks = {offset + i: block for i, m in enumerate(history)
                      if m.role == "user" and (block := self.c.anchors.get(m.id))}  # fmt: skip
            return history, blocks

        system = [m for m in req.messages[:-1] if m["role"] == "system"]
        history, blocks = await asyncio.to_thread(read)
        turns = [{"role": m.role, "content": m.text} for m in history]
        messages = [*system, *turns, req.messages[-1]]
        return replace(req, messages=messages, history=history, blocks=blocks)

    def _notes(
        self, req: ClientRequest, session_id: str, text: str, vector: Any
    ) -> tuple[TurnNotes | None, Recall]:
        """Persona and memory notes for this turn (None without the personal side)."""
        personal = self.c.personal
        if personal is None:
            return None, NO_RECALL
        persona, rel = personal.personas.active(req.user_id)
        recall = NO_RECALL
        if req.memory and personal.memory is not None:
            recall = self._recall(personal.memory, req, session_id, text, vector)
        settings = self.c.settings
        return TurnNotes(
            persona=persona, relationship=rel,
            system_prompt=system_prompt(persona, rel, req.user_id),
            memories=recall.recalled, summary=None,
            sampling=sampling(persona, settings.temperature, settings.max_tokens),
        ), recall  # fmt: skip

    def _recall(self, memory: MemoryService, req: ClientRequest, session_id: str, text: str,
                vector: Any) -> Recall:  # fmt: skip
        """The earlier turns' notes where they were put, and this turn's: what memory holds
        for the new message that the conversation does not say already (notes.py)."""
        top_k = self.c.settings.memory_top_k
        found = memory.recall(req.user_id, text, vector, 2 * top_k)  # some are left out below
        digests = turn_digests(req.user_id, req.messages)
        # session mode: the earlier turns' notes are the stored turns' blocks (req.blocks)
        earlier = earlier_notes(self.anchors, digests) if req.session_id is None else NO_NOTES
        again = self.anchors.get(digests[-1])  # a resend or a regenerate: the same notes
        noted = earlier.keys | {n.key for n in again or ()}
        live = set(memory.index.get(req.user_id, noted)) if noted else set()
        earlier = earlier.only(live)
        if again is not None:
            return Recall([], tuple(n for n in again if n.key in live), earlier, digests)
        fresh = said_elsewhere(self.c.store, found, session_id, req.messages)
        if req.blocks:
            fresh = self.c.not_in_prompt(fresh, req.history, list(req.blocks.values()))
        if sum(d is not None for d in digests) > 1:  # past the first turn: only what answers it
            fresh = [r for r in fresh if r.reasons.get("confident")]
        texts = earlier.texts
        fresh = [r for r in fresh if r.memory.key not in earlier.keys
                 and norm(r.memory.text) not in texts]  # fmt: skip
        fresh = split_budget(fresh[:top_k])
        current = tuple(Note.of(r, memory_line(r)) for r in fresh)
        return Recall(fresh, current, earlier, digests)

    def _context(self, req: ClientRequest, notes: TurnNotes | None, recall: Recall,
                 engine: Engine, opts: GenerationOptions) -> BuiltContext:  # fmt: skip
        """The client's messages around persona and memory notes, fitted to the context; this
        turn's notes are anchored for the conversation's next calls."""
        persona = None
        if req.persona:
            persona = notes.system_prompt if notes is not None else self.c.settings.system_prompt
        parts = layout(req.messages, persona, req.output, req.tools)
        blocks = req.blocks if req.session_id is not None else recall.earlier.blocks()
        turns = with_notes(parts.turns, len(req.messages) - 1 - len(parts.turns), blocks)
        own_persona = notes is not None and req.persona and not notes.persona.is_default
        budget = engine.info.context_length - opts.max_tokens
        personal = own_persona or bool(recall.earlier.keys) or bool(req.blocks)
        built = fit_context(engine, parts.head, turns, parts.tail, budget,
                            [n.line for n in recall.current], None, personal)  # fmt: skip
        if recall.digests:
            self.anchors.put(recall.digests[-1], recall.current[: built.memories_used])
        return built

    def _cacheable(self, turn: Turn) -> bool:
        """OpenAI semantics: only one plain choice, and never a sampled creative request."""
        req = turn.req
        if not req.use_cache or req.n > 1 or req.logprobs is not None or req.grammar:
            return False
        return not (turn.opts.temperature > 0 and is_creative(turn.text))


async def generate_choices(
    engine: Engine,
    prompt: list[int],
    opts: GenerationOptions,
    n: int,
    key: str,
    grammar: str | None = None,
    logprobs: int | None = None,
    route_key: str | None = None,
    server: str | None = None,
) -> AsyncIterator[Piece | list[GenerationDone]]:
    """`n` choices: the prompt is prefilled once, each choice copies it (the KV cache's prefix
    sharing) and samples with its own seed. Ends with every choice's GenerationDone."""
    if n > 1:
        with contextlib.suppress(Overloaded):  # the choices then share what the cache has
            await engine.prefill(prompt, key)
    requests = [
        GenerationRequest(
            prompt,
            replace(opts, seed=None if opts.seed is None else opts.seed + i),
            session_key=key if i == 0 else f"{key}#{i}",
            grammar=grammar,
            logprobs=logprobs,
            route_key=route_key,
            server=server if i == 0 else None,  # the first choice has the admitted server
        )
        for i in range(n)
    ]
    queue: asyncio.Queue[tuple[int, str | GenerationDone | BaseException]] = asyncio.Queue()

    async def run(i: int, request: GenerationRequest) -> None:
        try:
            async for event in engine.generate(request):
                await queue.put((i, event))
        except BaseException as exc:  # handed to the consumer, which raises it
            await queue.put((i, exc))

    tasks = [asyncio.create_task(run(i, r)) for i, r in enumerate(requests)]
    dones: dict[int, GenerationDone] = {}
    try:
        while len(dones) < n:
            i, event = await queue.get()
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, GenerationDone):
                dones[i] = event
            else:
                yield Piece(i, event, engine.info.name)
    finally:
        for task, request in zip(tasks, requests, strict=True):
            request.cancelled = True
            task.cancel()
    yield [dones[i] for i in range(n)]


def logprob_content(entries: list[TokenLogprob] | None) -> list[dict[str, Any]] | None:
    """OpenAI's `logprobs.content` for one choice."""
    if entries is None:
        return None
    return [
        {
            "token": e.token,
            "bytes": list(e.bytes),
            "logprob": e.logprob,
            "top_logprobs": [{"token": t, "bytes": list(b), "logprob": lp} for t, b, lp in e.top],
        }
        for e in entries
    ]
