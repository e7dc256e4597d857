"""The detail words of the semantic cache, in one place: the verifier (verify.py) refuses a
candidate whose numbers, question word or opposite words differ from the query's, and the chat
near misses of the dev data (nearmiss.py) are made by changing exactly such a word.

Both read these lists, so a word added here is both checked and tested. (The chat set therefore
measures the verifier on its own vocabulary; MRPC and STS-B, made by others, do not.)
"""

from __future__ import annotations

# Counting words a near miss swaps for one another ("two dogs" -> "four dogs").
COUNTING = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "twenty", "hundred")  # fmt: skip
NUMBER_WORDS = frozenset(
    (*COUNTING, "zero", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
     "seventeen", "eighteen", "nineteen", "thirty", "forty", "fifty", "sixty", "seventy",
     "eighty", "ninety", "thousand", "million", "billion", "trillion", "first", "second",
     "third", "fourth", "fifth", "half", "quarter", "dozen", "once", "twice")
)  # fmt: skip

# What/how/which questions are often paraphrases of each other; these ask for different things.
QUESTION_WORDS = {"who": "who", "whom": "who", "whose": "who", "when": "when",
                  "where": "where", "why": "why"}  # fmt: skip
QUESTIONS = tuple(dict.fromkeys(QUESTION_WORDS.values()))  # who, when, where, why

# Words whose swap keeps a sentence's shape and flips its meaning (soft/hard yolk).
OPPOSITE_PAIRS = (
    "love hate|before after|more less|always never|best worst|early late|big small|hot cold|"
    "old young|first last|buy sell|morning night|happy sad|easy hard|cheap expensive|fast slow|"
    "start stop|open close|win lose|increase decrease|good bad|long short|high low|add remove|"
    "up down|inside outside|tall short|loud quiet|light heavy|warm cool|soft hard|"
    "create delete|beginner expert|left right|north south|east west|minimum maximum|"
    "true false|new old|light dark|easy difficult|with without|above below|import export|"
    "enable disable|lend borrow|push pull|over under|everyone nobody|most least|strong weak|"
    "rich poor|wet dry|full empty|safe dangerous|legal illegal|possible impossible|men women|"
    "male female|boy girl|day night|summer winter|spring autumn|morning evening|"
    "yesterday tomorrow|past future|upload download|input output|positive negative|"
    "like dislike|agree disagree|accept reject|win loss|gain lose|sunrise sunset|odd even"
)


def _opposites() -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for pair in OPPOSITE_PAIRS.split("|"):
        a, b = pair.split()
        found.setdefault(a, []).append(b)
        found.setdefault(b, []).append(a)
    return {word: tuple(dict.fromkeys(others)) for word, others in found.items()}


# Each word's opposites, in the order the pairs name them (the first is a near miss's swap).
OPPOSITES = _opposites()
