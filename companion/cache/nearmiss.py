"""Chat near misses, built reproducibly: a chat line and the same line with one detail changed.

A semantic cache must never answer "Can I feed my dog grapes?" with the reply to "Can I feed my
cat grapes?". Each function here takes a real line (Persona-Chat, GPTCache questions) and
changes exactly one detail (an item of a category, a number, negation, an opposite word, whose
it is, the question word), or rewrites it without changing its meaning (contractions), so the
dev set holds both near misses and true paraphrases of chat-shaped text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from companion.cache.words import COUNTING, OPPOSITES, QUESTIONS

# Items of one kind: swapping one for another keeps the sentence's shape and changes its meaning.
CATEGORIES = [
    "dog cat horse bird fish rabbit hamster snake turtle parrot cow pig goat chicken",
    "pizza pasta sushi burgers salad tacos chocolate steak rice bread soup cake cookies pancakes",
    "coffee tea beer wine juice milk soda",
    "red blue green yellow black white purple pink orange",
    "soccer football basketball baseball tennis golf hockey volleyball swimming running hiking "
    "cycling skiing surfing yoga",
    "guitar piano violin drums flute saxophone cello",
    "teacher nurse doctor lawyer engineer chef pilot firefighter accountant artist writer "
    "programmer farmer dentist",
    "France Italy Spain Japan China Germany Mexico Canada Brazil India Australia England Ireland",
    "Paris London Tokyo Rome Berlin Madrid Chicago Boston Seattle Sydney",
    "English French Spanish German Italian Japanese Chinese Russian",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "January February March April May June July August September October November December",
    "summer winter spring autumn",
    "mother father sister brother son daughter wife husband grandmother grandfather aunt uncle "
    "mom dad",
    "reading painting cooking gardening dancing singing knitting fishing camping gaming writing "
    "baking",
    "movies books music podcasts",
    "Python Java JavaScript Rust Linux Windows iPhone Android",
    "car bike bus train plane boat",
]
AUXILIARIES = {
    "is": "isn't",
    "are": "aren't",
    "was": "wasn't",
    "do": "don't",
    "does": "doesn't",
    "did": "didn't",
    "can": "can't",
    "will": "won't",
    "have": "haven't",
    "should": "shouldn't",
    "could": "couldn't",
    "would": "wouldn't",
}
OWNERS = {"my": "your", "your": "my", "me": "you", "our": "their", "his": "her", "her": "his"}
CONTRACTIONS = {
    "what's": "what is",
    "i'm": "i am",
    "don't": "do not",
    "it's": "it is",
    "that's": "that is",
    "you're": "you are",
    "i've": "i have",
    "can't": "cannot",
    "doesn't": "does not",
    "isn't": "is not",
    "i'd": "i would",
    "i'll": "i will",
    "what is": "what's",
    "do not": "don't",
}

_SWAPS: dict[str, list[str]] = {}
for _line in CATEGORIES:
    _items = _line.split()
    for _w in _items:
        _SWAPS[_w.lower()] = [x for x in _items if x != _w]
Change = Callable[[str, random.Random], str | None]


def _match_case(word: str, like: str) -> str:
    """`word` capitalised like `like`."""
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _replace_word(text: str, pick: Callable[[str], str | None], rng: random.Random) -> str | None:
    """Replace one word (chosen by rng) for which `pick` gives a substitute."""
    matches = [m for m in re.finditer(r"[A-Za-z']+", text) if pick(m.group()) is not None]
    if not matches:
        return None
    m = rng.choice(matches)
    new = pick(m.group())
    assert new is not None
    return text[: m.start()] + _match_case(new, m.group()) + text[m.end() :]


def swap_item(text: str, rng: random.Random) -> str | None:
    """Another item of the same kind (dog -> cat, dogs -> cats, Paris -> Rome)."""

    def pick(word: str) -> str | None:
        low = word.lower()
        if low in _SWAPS:
            return rng.choice(_SWAPS[low])
        if low.endswith("s") and low[:-1] in _SWAPS:
            return rng.choice(_SWAPS[low[:-1]]) + "s"
        return None

    return _replace_word(text, pick, rng)


def change_number(text: str, rng: random.Random) -> str | None:
    """Another number (3 -> 5, two -> four)."""
    digits = list(re.finditer(r"\d+", text))
    if digits:
        m = rng.choice(digits)
        value = int(m.group())
        new = str(value + rng.choice([1, 2, 3, 10]) if value < 1900 else value + rng.choice([1, 5]))
        return text[: m.start()] + new + text[m.end() :]
    return _replace_word(
        text,
        lambda w: (
            rng.choice([n for n in COUNTING if n != w.lower()]) if w.lower() in COUNTING else None
        ),
        rng,
    )


def toggle_negation(text: str, rng: random.Random) -> str | None:
    """Negate or un-negate an auxiliary (is -> isn't), or "I like" -> "I don't like"."""
    back = {v: k for k, v in AUXILIARIES.items()}
    found = _replace_word(text, lambda w: AUXILIARIES.get(w.lower()) or back.get(w.lower()), rng)
    if found is not None:
        return found
    m = re.search(r"\b(I|we|you|they) (like|love|want|enjoy|need|have|know|think)\b", text)
    if m is None:
        return None
    return text[: m.start(2)] + "don't " + text[m.start(2) :]


def flip_opposite(text: str, rng: random.Random) -> str | None:
    """A word for its opposite (before -> after, love -> hate)."""
    return _replace_word(text, lambda w: OPPOSITES.get(w.lower(), (None,))[0], rng)


def change_owner(text: str, rng: random.Random) -> str | None:
    """Whose it is (my -> your, his -> her)."""
    return _replace_word(text, lambda w: OWNERS.get(w.lower()), rng)


def change_question(text: str, rng: random.Random) -> str | None:
    """Ask for something else (when -> where)."""
    return _replace_word(
        text,
        lambda w: (
            rng.choice([q for q in QUESTIONS if q != w.lower()]) if w.lower() in QUESTIONS else None
        ),
        rng,
    )


CHANGES: list[Change] = [
    swap_item,
    change_number,
    toggle_negation,
    flip_opposite,
    change_owner,
    change_question,
]


def near_miss(text: str, rng: random.Random) -> str | None:
    """`text` with one detail changed (a kind of change picked by rng); None if none applies."""
    for change in rng.sample(CHANGES, len(CHANGES)):
        changed = change(text, rng)
        if changed is not None and changed.lower() != text.lower():
            return changed
    return None


def reworded(text: str) -> str | None:
    """The same line with its contractions written out (or made), lower-cased; None if none."""
    low = text.lower()
    for old, new in CONTRACTIONS.items():
        pattern = rf"\b{re.escape(old)}\b"
        if re.search(pattern, low):
            return re.sub(pattern, new, low, count=1)
    return None
