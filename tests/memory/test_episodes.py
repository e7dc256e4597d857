"""Episodes: every turn kept and recalled beside the facts, time, updates, the assistant's side,
abstention and the episodes' cleanup (real SQLite store, real embedder)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.memory import CleanupPolicy, MemoryService
from companion.storage import Store

NOW = datetime(2024, 6, 20, 12, 0, tzinfo=UTC)

CHAT = [  # (days before NOW, role, text)
    (40, "user", "Can you suggest a recipe for dinner? My sister is visiting and she is vegan."),
    (40, "assistant", "How about a chickpea curry with coconut milk and spinach?"),
    (9, "user", "We finally went to the Rijksmuseum in Amsterdam, the Rembrandt room was packed."),
    (9, "assistant", "The Night Watch is worth the crowd! Did you see the Vermeers too?"),
    (2, "user", "I'm training for a half marathon in October, running 30 km a week."),
    (2, "assistant", "I recommend the book 'Run Less, Run Faster' for your training plan."),
]


def feed(memory: MemoryService, user: str = "ana") -> None:
    for n, (days, role, text) in enumerate(CHAT, start=1):
        when = NOW - timedelta(days=days)
        if role == "user":
            memory.observe(user, text, n, session_id=f"s{days}", now=when)
        else:
            memory.observe_reply(user, text, n, session_id=f"s{days}", now=when)


def test_every_turn_is_kept_with_session_time_and_provenance(memory: MemoryService) -> None:
    feed(memory)
    kept = memory.episodes("ana", limit=10)
    assert [e.text for e in kept] == [text for _, _, text in reversed(CHAT)]
    newest = kept[0]
    assert (newest.role, newest.session_id, newest.message_id) == ("assistant", "s2", 6)
    assert newest.created_at == NOW - timedelta(days=2)
    # the turn comes back with the fact kept from it, as one result with the turn's words
    top = memory.recall("ana", "Which painter's room was crowded at the museum?", now=NOW)
    assert top[0].memory.source_ids == (3,) and "Rembrandt" in (top[0].snippet or "")
    assert top[0].reasons["found_by"] and "relevance" in top[0].reasons
    # the whole turn is kept, the question in it too (extraction keeps only the statement)
    vegan = memory.recall("ana", "What diet does my sister follow?", now=NOW)
    (turn,) = [r for r in vegan if r.memory.source_ids == (1,)]
    assert turn.snippet == CHAT[0][2] and turn.reasons["source_turn"]
    # facts point to the turn they came from
    facts = memory.memories("ana")
    assert facts and all(set(m.source_ids) <= {1, 3, 5} for m in facts)


def test_what_the_companion_said_is_recallable_but_never_a_user_fact(memory: MemoryService) -> None:
    feed(memory)
    top = memory.recall("ana", "What book did you recommend to me?", now=NOW)
    assert top[0].is_episode and top[0].memory.role == "assistant"
    assert "Run Less" in top[0].memory.text
    assert all(
        "Run Less" not in m.text and "chickpea" not in m.text
        for m in memory.memories("ana", limit=100)
    )
    # asked about the user, the assistant's turns count half
    mine = memory.recall("ana", "What am I training for?", now=NOW)
    assert not (mine[0].is_episode and mine[0].memory.role == "assistant")


def test_time_expressions_and_as_of(memory: MemoryService) -> None:
    feed(memory)
    top = memory.recall("ana", "What did I do last week?", now=NOW)
    assert "Rijksmuseum" in top[0].memory.text and top[0].reasons["in_time_window"]
    assert top[0].reasons["time"]["phrase"] == "last week"
    # as of a month ago, the museum visit and the marathon had not been told yet
    then = memory.recall(
        "ana", "museum Amsterdam marathon", now=NOW, as_of=NOW - timedelta(days=30)
    )
    assert all(r.memory.created_at <= NOW - timedelta(days=30) for r in then)


def test_a_question_naming_only_a_time_finds_that_time_as_of_a_date_too(
    memory: MemoryService,
) -> None:
    feed(memory)
    for as_of in (None, NOW):  # as_of once hid the time window (and crashed the search route)
        top = memory.recall("ana", "last week", now=NOW, as_of=as_of)
        assert any("Rijksmuseum" in r.memory.text for r in top)


def test_the_past_month_is_the_last_thirty_days_not_the_calendar_month(
    memory: MemoryService,
) -> None:
    feed(memory)
    top = memory.recall("ana", "What did I do in the past month?", now=NOW)
    inside = [r for r in top if r.reasons.get("in_time_window")]
    assert inside and all(r.memory.created_at >= NOW - timedelta(days=31) for r in inside)
    assert any("Rijksmuseum" in r.memory.text for r in inside)  # 9 days ago, in June


def test_as_of_finds_what_was_said_then_behind_many_later_matches(memory: MemoryService) -> None:
    old = NOW - timedelta(days=60)
    memory.observe(
        "cy", "I adopted a tabby kitten called Miso from the shelter.", 1, session_id="s0", now=old
    )
    for n in range(2, 130):  # more later turns about Miso than one search returns
        memory.observe(
            "cy",
            f"Miso the kitten chased a toy mouse again, day {n}.",
            n,
            session_id=f"s{n}",
            now=NOW - timedelta(hours=n),
        )
    then = memory.recall(
        "cy", "Miso the kitten chased a toy mouse", now=NOW, as_of=old + timedelta(days=1)
    )
    assert then and "shelter" in (then[0].snippet or then[0].memory.text)
    assert all(r.memory.created_at <= old + timedelta(days=1) for r in then)


def test_the_newest_value_wins_and_the_old_stays_as_history(memory: MemoryService) -> None:
    memory.observe("bo", "I work as a teacher.", 1, now=NOW - timedelta(days=300))
    memory.observe("bo", "I work as a pilot now.", 2, now=NOW - timedelta(days=3))
    top = memory.recall("bo", "Where do I work as what?", now=NOW)
    assert top[0].snippet == "I work as a pilot now."
    old = [r for r in top if r.is_episode and "teacher" in r.memory.text]
    assert old and old[0].reasons["superseded"] and old[0].score < top[0].score
    # as of last year the fact read as it did then
    (fact,) = [
        r
        for r in memory.recall(
            "bo", "Where do I work as what?", now=NOW, as_of=NOW - timedelta(days=100)
        )
        if not r.is_episode
    ]
    assert fact.memory.text == "Works as a teacher"


def test_nothing_confident_for_a_question_memory_cannot_answer(memory: MemoryService) -> None:
    feed(memory)
    known = memory.recall("ana", "How far am I running each week for the half marathon?", now=NOW)
    assert known[0].reasons["confident"]
    unknown = memory.recall("ana", "What is the name of my hamster?", now=NOW)
    assert not any(r.reasons["confident"] for r in unknown)


def test_episodes_are_capped_and_unrecalled_replies_expire(store: Store, embedder) -> None:
    memory = MemoryService(store, embedder, policy=CleanupPolicy(90, 0.3, 1000, max_episodes=3))
    try:
        old = datetime.now(UTC) - timedelta(days=120)
        memory.observe("u", "I planted tomatoes in the garden.", 1, now=old)
        memory.observe_reply("u", "Tomatoes love sun: water them in the morning.", 2, now=old)
        for n in range(3, 6):
            memory.observe("u", f"Today I watered the garden, day {n}.", n)
        report = memory.cleanup("u")
        assert (report.episodes_expired, report.episodes_over_limit) == (1, 1)
        left = memory.episodes("u")
        assert len(left) == 3 and all(e.role == "user" for e in left)
        assert "tomatoes" not in " ".join(e.text for e in left)
    finally:
        memory.close()


def test_deleting_a_conversation_forgets_its_turns(memory: MemoryService) -> None:
    feed(memory)
    assert memory.forget_session("ana", "s9") == 2
    assert all(e.session_id != "s9" for e in memory.episodes("ana"))
    found = memory.recall("ana", "Rijksmuseum Rembrandt Night Watch", now=NOW)
    assert not any(r.is_episode and r.memory.session_id == "s9" for r in found)


LONG_TURN = (
    "Can you help me plan a weekend in Lisbon? I want to see the old town, eat custard tarts and "
    "maybe take the old tram up to the castle. I also need a hotel near the river that is not "
    "too expensive. Oh, and my cat Pixel will stay with my neighbour Rosa while I am away, she "
    "has fed him before."
)


def _sentence_rows(store: Store) -> int:
    import sqlalchemy as sa

    from companion.storage.schema import episode_sentences

    with store.reading() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(episode_sentences)).scalar())


def test_a_long_turn_is_found_by_its_best_sentence_and_keeps_it_across_reloads(
    memory: MemoryService, store: Store, embedder
) -> None:
    from companion.memory.episodes import sentence_texts

    memory.observe("ana", LONG_TURN, 1, session_id="s1", now=NOW - timedelta(days=3))
    memory.observe("ana", "Short and sweet.", 2, session_id="s1", now=NOW - timedelta(days=3))
    parts = sentence_texts("user", LONG_TURN)
    assert len(parts) == 4 and memory.episode_repo.sentence_count("ana") == 4
    assert _sentence_rows(store) == 4  # the short turn has none, nor would a reply
    question = "Who looks after my cat while I travel?"
    vector = embedder.embed_one(question)
    whole = float(embedder.embed_one(LONG_TURN) @ vector)
    best = max(float(embedder.embed_one(p) @ vector) for p in parts)
    assert best > whole + 0.05
    (episode,) = [e for e in memory.episodes("ana") if e.message_id == 1]
    for _ in range(2):  # as indexed when said, then as loaded from the database
        top = memory.recall("ana", question, vector, 5, now=NOW)
        assert top[0].memory.source_ids == (1,)
        found = memory.index.similarities("ana", [episode.key], vector)
        assert abs(found[episode.key] - best) < 1e-4
        memory.forget_user("ana")  # unload: the next recall loads it from the database


def test_a_turns_sentences_go_with_it(memory: MemoryService, store: Store) -> None:
    import sqlalchemy as sa

    from companion.storage.schema import users

    for user in ("ana", "bo"):
        memory.observe(user, LONG_TURN, 1, session_id="s1", now=NOW - timedelta(days=3))
    memory.observe("ana", LONG_TURN + " Also Rosa waters the plants.", 2, session_id="s2",
                   now=NOW - timedelta(days=2))
    assert _sentence_rows(store) == 13
    assert memory.forget_session("ana", "s1") == 1  # a deleted conversation
    assert memory.episode_repo.sentence_count("ana") == 5 and _sentence_rows(store) == 9
    memory.policy = CleanupPolicy(90, 0.3, 1000, max_episodes=0)  # the episodes' cap
    assert memory.cleanup("ana").episodes_over_limit == 1
    assert memory.episode_repo.sentence_count("ana") == 0 and _sentence_rows(store) == 4
    with store.writing() as conn:  # a deleted user (ON DELETE CASCADE)
        conn.execute(sa.delete(users).where(users.c.id == "bo"))
    memory.forget_user("bo")
    assert _sentence_rows(store) == 0
