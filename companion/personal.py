"""The personal part of one turn: persona and relationship, recalled memories, session summary
(prepared before generating), then extraction, relationship and summary updates (after)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from companion.config import Settings
from companion.domain import Message
from companion.embed.base import Embedder, Vector
from companion.llm.base import Engine
from companion.memory.base import Change, Episode, Recalled
from companion.memory.cleanup import CleanupPolicy
from companion.memory.llm_extract import LlmExtractor
from companion.memory.service import MemoryService
from companion.memory.summary import SessionSummaries
from companion.persona.model import Persona, Relationship
from companion.persona.prompt import feedback, sampling, system_prompt
from companion.persona.store import PersonaStore
from companion.storage import Store

QUOTED_KINDS = ("event", "explicit")
MEMORY_CHARS = 1600  # the notes' memory lines, split between facts and turns (FACTS_SHARE)
FACTS_SHARE = 0.5


def memory_line(recalled: Recalled) -> str:
    """How one recalled item reads in the prompt: a fact, the user's words with their date,
    or what the companion itself said (never as the user's words)."""
    item = recalled.memory
    day = item.created_at.date().isoformat()
    if isinstance(item, Episode):
        who = ("you (the companion) said" if item.role == "assistant"
               else f"{item.subject} said" if item.subject else "the user said")
        later = " (since changed)" if item.superseded_at is not None else ""
        return f'{who} on {day}: "{recalled.snippet or item.text}"{later}'
    text = item.text
    if item.kind in QUOTED_KINDS:
        text = f'said on {day}: "{text}"'
    return f"{item.subject}: {text}" if item.subject else text


def split_budget(recalled: list[Recalled], chars: int = MEMORY_CHARS,
                 facts_share: float = FACTS_SHARE) -> list[Recalled]:
    """The recalled items that fit the notes' budget, best first: facts may use
    `facts_share` of it and turns the rest; what one kind leaves unused goes to the other."""
    lines = [(r, len(memory_line(r))) for r in recalled]
    need = {kind: sum(n for r, n in lines if r.is_episode == kind) for kind in (False, True)}
    share = {False: chars * facts_share, True: chars * (1 - facts_share)}
    for kind in (False, True):
        spare = share[kind] - need[kind]
        if spare > 0:
            share[not kind] += spare
            share[kind] = need[kind]
    kept = []
    for r, n in lines:
        if n <= share[r.is_episode]:
            share[r.is_episode] -= n
            kept.append(r)
    return kept


@dataclass(frozen=True)
class TurnNotes:
    """What one turn's prompt gets from the personal side."""

    persona: Persona
    relationship: Relationship
    system_prompt: str
    memories: list[Recalled]
    summary: str | None
    sampling: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        """The memory lines, best first."""
        return [memory_line(r) for r in self.memories]

    @property
    def personal(self) -> bool:
        """Memories or a user's own persona shaped the prompt (never a shared cache entry)."""
        return bool(self.memories) or not self.persona.is_default


class Personal:
    """Prepares and records the personal side of each turn."""

    def __init__(self, settings: Settings, store: Store, memory: MemoryService | None,
                 personas: PersonaStore) -> None:
        """`memory` None turns long-term memory off (persona and summary still work)."""
        self.settings = settings
        self.memory = memory
        self.personas = personas
        self.store = store
        self.summaries = SessionSummaries(store)
        self.extractor: LlmExtractor | None = None  # LLM extraction, once use_engine() is called

    def use_engine(self, engine: Callable[[], Engine | None]) -> None:
        """Let LLM extraction (memory_llm_extraction) use the model `engine()` returns at each
        turn (the serving one: a reload swaps it). Without this call only the rules extract."""
        if self.memory is not None and self.extractor is None:
            self.extractor = LlmExtractor(
                self.settings.memory_llm_extraction, engine, self.memory.embedder,
                self.memory.reconcile_candidates,
            )

    def prepare(self, user_id: str, session_id: str, text: str,
                vector: Vector | None = None) -> TurnNotes:
        """Persona, relationship, the top memories for `text` and the session summary."""
        started = time.perf_counter()
        persona, rel = self.personas.active(user_id)
        recalled = (split_budget(self.memory.recall(user_id, text, vector,
                                                    self.settings.memory_top_k))
                    if self.memory is not None else [])
        recalled_at = time.perf_counter()
        summary = self.summaries.get(session_id)
        return TurnNotes(
            persona=persona, relationship=rel, system_prompt=system_prompt(persona, rel, user_id),
            memories=recalled, summary=summary,
            sampling=sampling(persona, self.settings.temperature, self.settings.max_tokens),
            timings={
                "memory_recall_ms": round((recalled_at - started) * 1000, 2),
                "memory_total_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )

    def after_turn(self, user_id: str, session_id: str, text: str, message_id: int,
                   notes: TurnNotes) -> list[Change]:
        """Learn from the user's turn, mark recalled memories used, advance the relationship
        and the session summary."""
        changes: list[Change] = []
        if self.memory is not None:
            self.memory.mark_recalled(user_id, notes.memories)
            changes = self.memory.observe(user_id, text, message_id, session_id=session_id)
            reply = self._reply_to(session_id, message_id)
            if reply is not None:
                self.memory.observe_reply(user_id, reply.text, reply.id, session_id=session_id)
            if self.extractor is not None:  # the model's facts follow on its own thread
                self.extractor.submit(user_id, text, message_id)
        self.personas.interacted(user_id, notes.persona.id, feedback(text))
        self.summaries.advance(
            session_id, self.settings.history_messages, self.settings.history_step
        )
        return changes

    def _reply_to(self, session_id: str, message_id: int) -> Message | None:
        """The stored reply to a user's message (None when there is none yet)."""
        return next((m for m in self.store.recent_messages(session_id, 4)
                     if m.role == "assistant" and m.id > message_id and m.text.strip()), None)

    def stats(self) -> dict[str, float]:
        """The memory counters, LLM extraction's included (empty when memory is off)."""
        if self.memory is None:
            return {}
        extraction = self.extractor.stats() if self.extractor is not None else {}
        return {**self.memory.stats(), **extraction}

    def close(self) -> None:
        """Stop the cleanup schedule and free the memory index."""
        if self.extractor is not None:
            self.extractor.close()
        if self.memory is not None:
            self.memory.close()


def open_personal(settings: Settings, store: Store, embedder: Embedder | None) -> Personal:
    """The personal side as the settings ask: memory on (needs the embedder) or off."""
    memory = None
    if settings.memory_enabled and embedder is not None:
        policy = CleanupPolicy(settings.memory_days_old, settings.memory_min_importance,
                               settings.memory_max_per_user, settings.memory_max_episodes)
        memory = MemoryService(store, embedder, top_k=settings.memory_top_k, policy=policy)
    return Personal(settings, store, memory, PersonaStore(store, settings.system_prompt))
