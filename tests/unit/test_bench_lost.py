"""bench load's lost-message check (pure logic over stored rows)."""

from __future__ import annotations

from companion.bench.load import Exchange, lost_in


def exchange(kind: str, text: str, reply: str, message_id: int | None) -> Exchange:
    return Exchange("u1", "s1", kind, text, reply, message_id, 10.0, None)


def test_a_reply_known_by_its_id_is_never_taken_by_another_exchange() -> None:
    # An OpenAI exchange (no id) whose rows never reached the database, then a chat API
    # exchange answered with the same (cached) reply, row 85: only the first is lost.
    rows = [(84, "s1", "user", "Hi!", "complete"), (85, "s1", "assistant", "Hello!", "complete")]
    first = exchange("openai", "Hi there!", "Hello!", None)
    second = exchange("api_sse", "Hi!", "Hello!", 85)
    lost, examples = lost_in(rows, [first, second])
    assert lost == 2  # the first exchange's message and its reply
    assert examples == [
        "user message 'Hi there!' in s1",
        "reply 'Hello!' (openai, id None) in s1",
    ]


def test_every_stored_exchange_is_found_and_a_changed_reply_is_lost() -> None:
    rows = [
        (1, "s1", "user", "Hi!", "complete"),
        (2, "s1", "assistant", "Hello!", "complete"),
        (3, "s1", "user", "Hi!", "complete"),
        (4, "s1", "assistant", "Hello!", "complete"),
        (5, "s1", "user", "And you?", "complete"),
        (6, "s1", "assistant", "Fine, thanks.", "interrupted"),
    ]
    found = [exchange("openai", "Hi!", "Hello!", None), exchange("api", "Hi!", "Hello!", 4)]
    assert lost_in(rows, found) == (0, [])
    changed = exchange("api", "And you?", "Fine, thanks.", 6)
    assert lost_in(rows, [*found, changed]) == (1, ["reply 'Fine, thanks.' (api, id 6) in s1"])
