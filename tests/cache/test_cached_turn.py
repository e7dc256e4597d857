"""The short way for a new conversation's cache hit (companion/cached_turn.py): same key, same
stored rows and same side effects as the full path, and never for a personal context.
Real runtime (tiny model), SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3

from companion.persona.model import Persona
from companion.runtime import Runtime

Q = "Name two colours of the sea."
OPTS = {"max_tokens": 10, "temperature": 0.0}


def _rows(runtime: Runtime, session_id: str) -> list[tuple[object, ...]]:
    """The session's messages read through a separate sqlite3 connection (committed rows)."""
    db = runtime.store.engine.url.database
    assert db
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT role, status, cached, text, token_count FROM messages "
            "WHERE session_id = ? ORDER BY id", (session_id,)
        ).fetchall()


async def test_first_message_hit_is_stored_and_counted_like_the_full_path(
    runtime: Runtime,
) -> None:
    companion = runtime.companion
    assert companion.personal is not None
    generated = await companion.chat("gen", Q, **OPTS)
    assert not generated.cached
    served = companion.cached_turns.served

    short = await companion.chat("newbie", Q, **OPTS)  # new session: the short way
    assert short.cached and companion.cached_turns.served == served + 1
    assert short.response == generated.response
    assert short.extra["cache_scope"] == "shared" and short.extra["cache_layer"] == "exact"

    # the same hit through the full path: a session of its own (no history yet)
    session = runtime.store.create_session("known")
    full = await companion.chat("known", Q, session.id, **OPTS)
    assert full.cached and companion.cached_turns.served == served + 1
    assert full.extra["cache_key"] == short.extra["cache_key"]

    # committed before chat() returned: a separate connection sees both messages
    tokens = companion.engine.count_tokens(Q)
    for result in (short, full):
        assert _rows(runtime, result.session_id) == [
            ("user", "complete", 0, Q, tokens),
            ("assistant", "complete", 1, generated.response, generated.usage.completion_tokens),
        ]
        stored = runtime.store.list_messages(result.session_id)
        assert stored[-1].id == result.message_id and stored[-1].model == result.model
    new_session = runtime.store.get_session(short.session_id)
    assert new_session is not None and new_session.user_id == "newbie"
    assert new_session.title == Q
    # the relationship counts the exchange either way
    for user in ("newbie", "known"):
        (rel,) = companion.personal.personas.relationships(user)
        assert (rel["persona_id"], rel["interactions"], rel["active"]) == ("default", 1, False)
    again = await companion.chat("newbie", Q, **OPTS)
    assert again.cached and again.session_id != short.session_id
    (rel,) = companion.personal.personas.relationships("newbie")
    assert rel["interactions"] == 2
    stats = companion.get_performance_stats()["cache"]
    assert stats["exact_hits"] == 3 and stats["lookups"] == 4  # generated: 1 miss


async def test_own_persona_or_memories_take_the_full_path(runtime: Runtime) -> None:
    companion = runtime.companion
    personal = companion.personal
    assert personal is not None and personal.memory is not None
    await companion.chat("gen", Q, **OPTS)
    served = companion.cached_turns.served

    personal.personas.create(Persona(id="pirate", name="Pirate", traits={"humor": 0.9}))
    personal.personas.select("captain", "pirate")
    pirate = await companion.chat("captain", Q, **OPTS)
    assert pirate.extra.get("cache_scope") != "shared"  # own persona: never the shared entry

    personal.memory.add("mem", "I keep bees on my roof.")
    remembered = await companion.chat("mem", Q, **OPTS)
    assert companion.cached_turns.served == served  # neither went the short way
    # the full path stored each exchange once (nothing left behind by the short way's try)
    for user, result in (("captain", pirate), ("mem", remembered)):
        (session,) = runtime.store.list_sessions(user)
        assert session.id == result.session_id
        assert len(runtime.store.list_messages(session.id)) == 2


async def test_facts_in_a_first_message_reach_the_users_memory_and_are_never_shared(
    runtime: Runtime,
) -> None:
    companion = runtime.companion
    assert companion.personal is not None and companion.personal.memory is not None
    memory = companion.personal.memory
    said = "My name is Zed and I love sailing."
    await companion.chat("first", said, **OPTS)
    result = await companion.chat("second", said, **OPTS)
    # a first message that states personal facts is never cached for everybody
    assert not result.cached and result.extra.get("cache_scope") != "shared"
    learned = {m.text for m in memory.memories("second")}
    assert {"Name is Zed", "Likes sailing"} <= learned
    (user_msg, _) = runtime.store.list_messages(result.session_id)
    assert all(user_msg.id in m.source_ids for m in memory.memories("second"))


async def test_concurrent_first_messages_each_get_their_own_committed_session(
    runtime: Runtime,
) -> None:
    companion = runtime.companion
    await companion.chat("gen", Q, **OPTS)
    users = [f"visitor{i}" for i in range(24)] + ["visitor0"]  # one user twice
    results = await asyncio.gather(*(companion.chat(u, Q, **OPTS) for u in users))
    assert all(r.cached for r in results)
    assert len({r.session_id for r in results}) == len(users)
    for r in results:
        assert [row[:3] for row in _rows(runtime, r.session_id)] == [
            ("user", "complete", 0), ("assistant", "complete", 1)]
    assert companion.personal is not None
    (rel,) = companion.personal.personas.relationships("visitor0")
    assert rel["interactions"] == 2
    writer = companion.cached_turns.writer
    assert writer.items == len(users)
