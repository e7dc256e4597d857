"""The check on a semantic candidate: near neighbours must also agree on the details.

A bi-encoder puts "Is it safe to fly today?" next to "Is it not safe to fly today?" and
"What is my name?" next to "What is your name?". Before a neighbour's reply is served, both
messages must agree on numbers, negation, named entities, person, question word and opposite
words. (A token-alignment stage used to follow; at equal false-hit rate it added no hits on any
dev set, so it was removed: docs/cache.md.)
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

from companion.cache.words import NUMBER_WORDS, OPPOSITES, QUESTION_WORDS

NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "nowhere",
    ]
)
PERSONS = {
    **dict.fromkeys(["i", "me", "my", "mine", "myself"], "1s"),
    **dict.fromkeys(["we", "us", "our", "ours", "ourselves"], "1p"),
    **dict.fromkeys(["you", "your", "yours", "yourself", "yourselves", "u", "ur"], "2"),
}
# Not compared like the above (a news sentence's "he" is often the other's named speaker), but a
# side that names a third person and no first or second one conflicts with one that names I/you.
THIRD_PERSONS = frozenset(
    ["he", "him", "his", "himself", "she", "her", "hers", "herself",
     "they", "them", "their", "theirs", "themselves"]
)  # fmt: skip
SENTENCE_START = frozenset({"", ".", "!", "?", ":", ";", '"', "(", "'"})
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[+#]+|(?:['.-][A-Za-z0-9]+)*)|\d[\d,]*(?:\.\d+)?%?")
_PARTS = re.compile(r"[a-z]+")
_PUNCT_BEFORE = re.compile(r"([.!?:;\"('])\s*$")


@dataclass(frozen=True)
class Details:
    """What two messages must share before one's reply may answer the other."""

    numbers: frozenset[str]
    negated: bool
    entities: frozenset[str]
    persons: tuple[str, ...]  # in order: "Do you like me?" is not "Do I like you?"
    questions: frozenset[str]
    words: frozenset[str]
    parts: tuple[str, ...] = ()  # every word and the parts of compounds (re-download), repeats kept
    tokens: tuple[str, ...] = ()  # the words in order, lower case (aligned to find a swapped "me")
    third: bool = False  # names he, she or they


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer and, when it says no, why."""

    ok: bool
    reason: str


def _person(lower: str) -> str | None:
    """The grammatical person of a pronoun, contracted ones too (i'm, you're, we've)."""
    return PERSONS.get(lower) or PERSONS.get(lower.split("'")[0])


def _is_entity(word: str, before: str) -> bool:
    """Capitalised mid-sentence, an acronym, or a name with digits or +/# in it (C++, GPT4)."""
    if any(c in word for c in "+#") or (any(c.isdigit() for c in word) and word[0].isalpha()):
        return True
    if sum(c.isupper() for c in word) >= 2:
        return True
    return word[0].isupper() and before not in SENTENCE_START and word.lower() not in PERSONS


def details(text: str) -> Details:
    """Extract numbers, negation parity, entities, grammatical persons and question words."""
    spaced = re.sub(r"n't\b", " not", text.replace("’", "'"))
    numbers, entities, questions, words = set(), set(), set(), set()
    persons: list[str] = []
    tokens: list[str] = []
    negations = 0
    for match in _WORD.finditer(spaced):
        word, lower = match.group(), match.group().lower().rstrip("'.")
        words.add(lower)
        tokens.append(lower)
        person = _person(lower)
        before_m = _PUNCT_BEFORE.search(spaced[: match.start()])
        before = before_m.group(1) if before_m else ("" if match.start() == 0 else " ")
        if word[0].isdigit():
            numbers.add(word.replace(",", "").rstrip("."))
        elif lower in NUMBER_WORDS:
            numbers.add(lower)
        elif lower in NEGATIONS:
            negations += 1
        elif person is not None:
            persons.append(person)
        elif lower in QUESTION_WORDS:
            questions.add(QUESTION_WORDS[lower])
        elif _is_entity(word, before):
            entities.add(lower)
    return Details(
        frozenset(numbers),
        negations % 2 == 1,
        frozenset(entities),
        _dedupe(persons),
        frozenset(questions),
        frozenset(words),
        tuple(_PARTS.findall(spaced.lower())),
        tuple(tokens),
        any(t in THIRD_PERSONS or t.split("'")[0] in THIRD_PERSONS for t in tokens),
    )


def _dedupe(items: list[str]) -> tuple[str, ...]:
    """The items in order, runs of the same item collapsed (my ... me -> 1s)."""
    return tuple(x for i, x in enumerate(items) if i == 0 or items[i - 1] != x)


def _persons_conflict(a: Details, b: Details) -> bool:
    """Whose it is differs. Both sides name I/we/you: the same persons in the same order, and
    no pronoun aligned with one of another person ("hiking with me" / "hiking with you"). One
    side impersonal ("How do I stop snoring?" / "What is the best way to stop snoring?"): no
    conflict, unless that side names he/she/they instead ("How do I" / "How does she")."""
    if not a.persons or not b.persons:
        return bool(a.persons and b.third or b.persons and a.third)
    if a.persons != b.persons:
        return True
    match = SequenceMatcher(None, a.tokens, b.tokens, autojunk=False)
    for op, i1, i2, j1, j2 in match.get_opcodes():
        if op == "replace":
            mine = {p for t in a.tokens[i1:i2] if (p := _person(t))}
            theirs = {p for t in b.tokens[j1:j2] if (p := _person(t))}
            if mine and theirs and mine != theirs:
                return True
    return False


def _antonym_swap(a: Details, b: Details) -> bool:
    """One side has a word whose opposite only the other side has: counted, so a word said
    twice and swapped once is seen ("even ... even" / "odd ... even"), and in the parts of
    compounds ("re-download" / "re-upload", "numpy-like" / "numpy-dislike")."""
    only_a, only_b = Counter(a.parts) - Counter(b.parts), Counter(b.parts) - Counter(a.parts)
    return any(only_b.keys() & set(OPPOSITES.get(w, ())) for w in only_a)


def _entities_agree(a: Details, b: Details, text_a: str, text_b: str) -> bool:
    """Each side's entities appear in the other's text (so 'paris' matches 'Paris')."""
    low_a, low_b = text_a.lower(), text_b.lower()
    return all(e in low_b for e in a.entities) and all(e in low_a for e in b.entities)


def _order(entities: frozenset[str], text: str) -> list[str]:
    """The entities in the order they first appear in the text, each as a whole word where it
    is one ("indiana" is not found inside "indianapolis"); ties by the entity itself, so the
    order never depends on the set's iteration order."""
    low = text.lower()

    def first(entity: str) -> int:
        found = re.search(rf"(?<!\w){re.escape(entity)}(?!\w)", low)
        return found.start() if found else low.find(entity)

    return sorted(entities, key=lambda e: (first(e), e))


def rule_check(query: str, candidate: str) -> Verdict:
    """The symbolic checks alone (no model)."""
    a, b = details(query), details(candidate)
    if a.numbers != b.numbers:
        return Verdict(False, "numbers differ")
    if a.negated != b.negated:
        return Verdict(False, "negation differs")
    if _persons_conflict(a, b):
        return Verdict(False, "person differs")
    if a.questions != b.questions:
        return Verdict(False, "question word differs")
    if _antonym_swap(a, b):
        return Verdict(False, "opposite words")
    if not _entities_agree(a, b, query, candidate):
        return Verdict(False, "named entities differ")
    both = a.entities | b.entities
    if _order(both, query) != _order(both, candidate):
        return Verdict(False, "named entities in another order")
    return Verdict(True, "")
