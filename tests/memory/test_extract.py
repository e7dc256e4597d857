"""Rule extraction of the listed self-disclosures (name, age, place, work, family, likes and
dislikes, plans, feelings, "remember that ...")."""

from __future__ import annotations

import pytest

from companion.memory.extract import extract


@pytest.mark.parametrize(
    ("turn", "kind", "slot", "text"),
    [
        ("Hi! My name is Alice.", "profile", "name", "Name is Alice"),
        ("call me jo", "profile", "name", "Name is Jo"),
        ("I'm 34 years old.", "profile", "age", "Is 34 years old"),
        ("I live in Paris.", "profile", "home", "Lives in Paris"),
        ("I moved to Lyon last month.", "profile", "home", "Lives in Lyon"),
        ("I'm originally from Chile", "profile", "origin", "Is from Chile"),
        ("I work as a nurse at the night clinic", "profile", "work",
         "Works as a nurse at the night clinic"),
        ("I'm a teacher.", "profile", "work", "Works as a teacher"),
        ("I work at Airbus", "profile", "workplace", "Works at Airbus"),
        ("My sister is called Ana.", "profile", "family:sister:ana", "Has a sister named Ana"),
        ("I have two kids", "profile", "has:two kids", "Has two kids"),
        ("my dog is named rex", "profile", "pet:dog:rex", "Has a dog named Rex"),
        ("I love hiking in the mountains", "preference", "likes:hiking mountains",
         "Likes hiking in the mountains"),
        ("I don't like jazz anymore", "preference", "likes:jazz", "Dislikes jazz"),
        ("My favorite color is blue", "preference", "favorite:color", "Favourite color is blue"),
        ("Autumn is my favorite season.", "preference", "favorite:season",
         "Favourite season is Autumn"),
        ("I'm going to visit Rome next month", "plan", None,
         "Plan: I'm going to visit Rome next month"),
        ("I'm so stressed about my exam", "feeling", "feeling", "Feels stressed about their exam"),
        ("Please remember that my passport expires in May", "explicit", None,
         "Asked to remember: my passport expires in May"),
    ],
)
def test_listed_disclosures(turn: str, kind: str, slot: str | None, text: str) -> None:
    found = [(c.kind, c.slot, c.text) for c in extract(turn)]
    assert (kind, slot, text) in found, found


def test_importance_explicit_and_personal_high_small_talk_absent() -> None:
    explicit = extract("Remember that my anniversary is June 3")[0]
    name = extract("My name is Alice")[0]
    event = extract("I went to a support group yesterday and it was powerful")[0]
    assert explicit.importance == 1.0
    assert name.importance >= 0.8
    assert event.kind == "event" and event.importance < 0.5
    chatter_turns = ("hi", "I'm fine thanks", "lol ok", "How are you?", "Wow, that's awesome!")
    requests = ("What is the capital of Peru?", "Give me a word that rhymes with cat.",
                "Please write a short poem about the sea", "Can you explain black holes simply")
    for chatter in (*chatter_turns, *requests):
        assert extract(chatter) == [], chatter


def test_forget_request_and_subject() -> None:
    (forget,) = extract("Forget that I like jazz")
    assert forget.forget and forget.text == "I like jazz"
    (fact,) = extract("I live in Oslo", subject="Caroline")
    assert fact.subject == "Caroline"


def test_no_false_jobs_or_ages() -> None:
    assert extract("I'm a big fan of sushi")[0].slot == "likes:sushi"
    assert all(c.slot != "work" for c in extract("I'm in a meeting with my manager"))
    assert all(c.slot != "age" for c in extract("I am 5 minutes late"))
