"""The parts of a question that asks about several things at once.

"Which did I start first, 'The Crown' or 'Game of Thrones'?", "Which device did I set up
first, the smart thermostat or the mesh network?", "How many days passed between my visit to
MoMA and the exhibit at the Met?": each named thing was most likely said in its own
conversation, and one search for the whole question can let the better match crowd out the
other. With `Weights.parts` set, recall searches each part too and merges the rankings
(recall.merge_parts), so that every part's best match reaches the top.

Only the question's shape is read: names in quotes, "A or B" alternatives after a comma,
"between A and B". A part must hold a content word beyond the question's frame ("how many
days"), and a question with fewer than two parts, of more than one sentence or of more than
MAX_WORDS words is not split. (Splitting at "when" / "before" / "after" / "than" and at
lists joined by "and" was tried: it made parts such as "accident" out of "How did Melanie
feel after the accident?", and lost LoCoMo questions.)
"""

from __future__ import annotations

import re

from companion.memory.extract import content_words

MAX_PARTS = 4
MAX_WORDS = 30  # a longer question (a story, a follow-up with details) is not split
# the frame of a question, not what it is about: a part needs a content word beyond these
FRAME = frozenset((
    "many", "much", "long", "days", "weeks", "months", "years", "hours", "minutes", "times",
    "total", "number", "amount", "average", "difference", "passed", "ago", "first", "last",
    "previous", "previously", "initial", "initially", "current", "currently", "recent",
    "recently", "now", "earlier", "later", "since", "order", "earliest", "latest", "today",
    "start", "starting",
))

_QUOTED = re.compile(r"(?<![\w'])['\"‘“](?!s\b)([^'\"‘’“”]{2,80}?)['\"’”](?!\w)")
# "..., the smart thermostat or the mesh network system?"
_ALTERNATIVES = re.compile(r",\s*([^,?]+?)\s+or\s+([^,?]+?)\s*\??\s*$", re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+(.+?)\s+and\s+(.+?)\s*\??\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.?!]\s+\S")  # more than one sentence
_LEADING = re.compile(r"^(?:the|my|a|an|our|his|her|their)\s+", re.IGNORECASE)


def _clean(part: str, article: bool) -> str:
    """A part without its surrounding punctuation (and its leading article unless
    `article`: a quoted title keeps its "The")."""
    part = part.strip(" ,.?!;:'\"‘’“”")
    return part if article else _LEADING.sub("", part).strip()


def question_parts(question: str) -> list[str]:
    """The parts of `question` worth a search of their own (none if it asks about one thing).

    The first rule that finds two or more parts wins: quoted names, alternatives after a
    comma, "between A and B".
    """
    text = " ".join(question.split())
    if len(text.split()) > MAX_WORDS or _SENTENCE_END.search(text):
        return []
    for found, article in ((_quoted(text), True), (_alternatives(text), False),
                           (_between(text), False)):
        parts = _kept(found, article)
        if len(parts) >= 2:
            return parts[:MAX_PARTS]
    return []


def _kept(parts: list[str], article: bool) -> list[str]:
    """The cleaned parts that hold a content word, each once."""
    out: dict[str, None] = {}
    for part in parts:
        part = _clean(part, article)
        if set(content_words(part)) - FRAME and part.lower() not in (p.lower() for p in out):
            out[part] = None
    return list(out)


def _quoted(text: str) -> list[str]:
    """Names in quotes ('The Nightingale', "Page Turners")."""
    return _QUOTED.findall(text)


def _alternatives(text: str) -> list[str]:
    """"..., A or B?" as [A, B]; "Mark and Sarah or Tom" stays two alternatives."""
    match = _ALTERNATIVES.search(text)
    return [match.group(1), match.group(2)] if match else []


def _between(text: str) -> list[str]:
    """"between A and B" as [A, B]."""
    match = _BETWEEN.search(text)
    return [match.group(1), match.group(2)] if match else []
