"""Rule extraction reads facts from statements only: questions, hypotheticals and negated
clauses store nothing (or the negation as such); precision on the labelled set."""

from __future__ import annotations

from companion.memory.extract import extract
from companion.memory.extract_eval import LABELLED, extraction_figures


def texts(sentence: str) -> list[str]:
    return [c.text for c in extract(sentence)]


def test_a_question_is_not_a_fact() -> None:
    assert texts("And what do I love doing?") == []  # stored "Likes doing" before
    assert texts("what do i like to eat") == []
    assert texts("Do I have a dog?") == []


def test_hypotheticals_and_wishes_are_not_facts() -> None:
    assert texts("If I had a dog, I would call it Rex.") == []
    assert texts("Imagine I'm a pilot.") == []
    assert texts("I wish I had a cat.") == []


def test_negations_store_nothing_or_the_negation() -> None:
    assert texts("I don't think I love hiking.") == []
    assert texts("I don't have a dog.") == ["Has no dog"]
    assert texts("I'm not sure, but I love hiking.") == ["Likes hiking"]  # another clause
    assert texts("I don't like horror movies.") == ["Dislikes horror movies"]


def test_statements_still_make_facts_in_a_mixed_turn() -> None:
    got = texts("I live in Lisbon. Where do you live? If I could, I'd live by the sea.")
    assert got == ["Lives in Lisbon"]


def test_precision_on_the_labelled_set() -> None:
    figures = extraction_figures()
    assert len(LABELLED) >= 50 and figures["extraction_sentences"] == len(LABELLED)
    assert figures["extraction_precision"] >= 0.95
    assert figures["extraction_recall"] >= 0.9
