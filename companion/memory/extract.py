"""Rule-based extraction of self-disclosures from one user turn (no model call, well under 1 ms).

Each sentence is matched against patterns for the common disclosures (name, age, home, origin,
work, family, pets, likes and dislikes, favourites, plans, feelings, "remember that ...",
"forget that ..."); the statements no pattern takes are kept together as one low-importance
`event` in the user's own words when they carry enough informative (non-chatter) words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace

from companion.memory.base import BASE_IMPORTANCE, Candidate, Kind

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# a clause ends at punctuation or at a joining word
_END = (r"(?=\s+(?:and|but|because|since|so|which|who|where|though|although|while|when)\b"
        r"|[,.;!?)]|$)")
_PHRASE = rf"(?P<v>[^,.;!?()]{{2,60}}?){_END}"
# likes and dislikes keep "and": "I like taking and posting photos"
_LIST = _PHRASE.replace("(?:and|but", "(?:but")
_NAME = r"(?P<v>[A-Za-z][\w'-]{1,30}(?:\s+[A-Z][\w'-]{1,30})?)"
_I_AM = r"(?:I'm|I am|im)"
_DONT = r"(?:don't|do not|dont)"
_ADV = r"(?:really |absolutely |also |totally |just |truly |so |kind of |pretty much )*"

FAMILY = (
    "wife|husband|partner|boyfriend|girlfriend|fiance|fiancee|son|daughter|mom|mum|mother|dad|"
    "father|brother|sister|grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin|best friend|"
    "kids|children|baby|twins|niece|nephew|roommate"
)
PETS = "dog|cat|puppy|kitten|bird|parrot|hamster|rabbit|bunny|fish|turtle|snake|horse|lizard|pet"
_JOB_END = re.compile(
    r"(?:er|or|ist|ian|ant|ent|ect|nurse|chef|cook|student|clerk|coach|pilot|vet|lawyer|"
    r"dentist|surgeon|medic|retiree|freelancer|barista|scientist|analyst|mechanic)$"
)
_NOT_JOB = re.compile(rf"\b(?:{FAMILY}|fan|lover|member|beginner|user|owner|mother|father|number|"
                      r"dinner|winner|eater|other|person|loner|leader|follower|sucker|sister|brother)$")
_VAGUE = {"it", "that", "this", "you", "them", "him", "her", "those", "these", "so", "too",
          "to", "the idea", "what", "a lot", "much"}
FEELINGS = (
    "happy|sad|stressed|anxious|tired|exhausted|lonely|excited|nervous|worried|depressed|angry|"
    "upset|overwhelmed|bored|frustrated|grateful|proud|scared|afraid|hopeful|heartbroken|sick|ill"
)
_STOP = (
    "a an the and or but if of to in on at for with from by about as into over after before "
    "is are was were be been being am do does did have has had i me my mine we our us you your "
    "it its this that these those he she they them his her their so too very just really not "
    "no yes oh ok okay yeah well lol haha hi hello hey thanks thank what how who when where why "
    "can could would should will shall may might must get got go going like also still then than "
    "there here some any all one up out im i'm i've i'd i'll it's that's don't didn't"
)
STOPWORDS = frozenset(_STOP.split())
TOPIC_WORDS: dict[str, list[str]] = {
    "family": (FAMILY + "|family|parents|married|mom|dad").split("|"),
    "pets": PETS.split("|") + ["pets", "dogs", "cats", "vet"],
    "work": ["work", "job", "office", "boss", "career", "colleague", "company", "shift",
             "promotion", "salary", "hired", "fired", "interview", "business"],
    "school": ["school", "college", "university", "class", "exam", "study", "studying", "degree"],
    "food": ["food", "eat", "cook", "cooking", "pizza", "pasta", "dinner", "lunch", "breakfast",
             "restaurant", "baking", "recipe", "coffee", "tea", "chocolate", "sushi", "sweets"],
    "music": ["music", "song", "songs", "band", "concert", "guitar", "piano", "violin", "sing",
              "singing", "jazz", "rock", "album"],
    "sports": ["sport", "sports", "football", "soccer", "basketball", "tennis", "running", "run",
               "gym", "hiking", "swimming", "yoga", "cycling", "frisbee", "skiing", "climbing"],
    "travel": ["travel", "trip", "vacation", "holiday", "flight", "visit", "visited", "beach",
               "abroad", "camping"],
    "health": ["doctor", "hospital", "sick", "ill", "health", "pain", "therapy", "medicine",
               "allergic", "allergy", "diet", "vegan", "vegetarian"],
    "hobbies": ["hobby", "painting", "paint", "drawing", "reading", "books", "book", "games",
                "gaming", "garden", "gardening", "photography", "knitting", "writing", "movies"],
    "home": ["live", "moved", "house", "apartment", "city", "town", "home", "neighborhood"],
}
_TOPIC_OF = {word: topic for topic, words in TOPIC_WORDS.items() for word in words}


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, apostrophes; a possessive 's dropped)."""
    return [w.removesuffix("'s") for w in re.findall(r"[a-z0-9][a-z0-9']*", text.lower())]


def content_words(text: str) -> list[str]:
    """Words that carry meaning: not stopwords, at least three letters."""
    return [w for w in words(text) if len(w) >= 3 and w not in STOPWORDS]


def topics_of(text: str, *extra: str) -> tuple[str, ...]:
    """Topic labels for a text, from a small keyword map, plus `extra`."""
    found = dict.fromkeys(extra)
    for word in words(text):
        topic = _TOPIC_OF.get(word) or _TOPIC_OF.get(word.rstrip("s"))
        if topic:
            found[topic] = None
    return tuple(found)


_TRAILING = re.compile(
    r"(?:\s+(?:now|right now|these days|anymore|any more|lately|too|a lot|recently|yesterday|"
    r"today|last (?:week|month|year|night)|this (?:week|month|year)|"
    r"a (?:while|year|month|week) ago|"
    r"\w+ (?:days|weeks|months|years) ago))+$",
    re.IGNORECASE,
)


def _cap(word: str) -> str:
    """Capitalise a lower-case name."""
    return word.capitalize() if word.islower() else word


def _clean(value: str) -> str:
    """Trim a captured phrase: spaces, trailing filler words."""
    value = re.sub(r"\s+", " ", value).strip(" '\"")
    return _TRAILING.sub("", value)


def _slot_key(value: str) -> str:
    """A slot suffix from a phrase: its content words, lower case."""
    return " ".join(content_words(value)[:4]) or value.lower()


# Each rule: pattern, and a function from the match to a Candidate (or None to pass).
Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Candidate | None]]


def _fact(text: str, kind: Kind, slot: str | None, *topics: str, importance: float = 0.0,
          ) -> Candidate:
    """A candidate with the kind's base importance (or the one given) and topics."""
    return Candidate(text=text, kind=kind, slot=slot, topics=topics_of(text, *topics),
                     importance=importance or BASE_IMPORTANCE[kind])


def _name(m: re.Match[str]) -> Candidate | None:
    """'my name is Ana' -> Name is Ana."""
    v = m["v"].split()
    if v[0].lower() in STOPWORDS or v[0].lower() in {"not", "called"}:
        return None
    # a second word is part of the name only when written with a capital
    name = " ".join([_cap(v[0]), *[w for w in v[1:2] if w[:1].isupper()]])
    return _fact(f"Name is {name}", "profile", "name", "identity", importance=0.9)


def _age(m: re.Match[str]) -> Candidate | None:
    """'I'm 34 years old' -> Is 34 years old."""
    age = int(m["v"])
    return _fact(f"Is {age} years old", "profile", "age", "identity") if 3 < age < 120 else None


def _home(m: re.Match[str]) -> Candidate | None:
    """'I live in / moved to Lyon' -> Lives in Lyon (one home: a move UPDATEs it)."""
    return _fact(f"Lives in {_clean(m['v'])}", "profile", "home", "home")


def _origin(m: re.Match[str]) -> Candidate | None:
    """'I'm from Chile' / 'I grew up in Oslo' -> Is from ..."""
    return _fact(f"Is from {_clean(m['v'])}", "profile", "origin", "home")


def _job(m: re.Match[str]) -> Candidate | None:
    """'I work as a nurse' / "I'm a teacher" -> Works as a ..."""
    role = _clean(m["v"])
    last = role.split()[-1].lower() if role else ""
    if not m["how"] and (not _JOB_END.search(last) or _NOT_JOB.search(last)
                             or len(role.split()) > 4):
        return None
    article = "" if re.match(r"(?:a|an|the)\s", role, re.I) else "a "
    return _fact(f"Works as {article}{role}", "profile", "work", "work")


def _workplace(m: re.Match[str]) -> Candidate | None:
    """'I work at Airbus' -> Works at Airbus."""
    return _fact(f"Works {m['prep'].lower()} {_clean(m['v'])}", "profile", "workplace", "work")


def _relative(m: re.Match[str]) -> Candidate | None:
    """'my sister is called Ana' -> Has a sister named Ana."""
    rel, name = m["rel"].lower(), _cap(m["v"].split()[0])
    if name.lower() in STOPWORDS:
        return None
    return _fact(f"Has a {rel} named {name}", "profile", f"family:{rel}:{name.lower()}", "family")


def _pet(m: re.Match[str]) -> Candidate | None:
    """'my dog is called Rex' / 'I have a cat named Tom' -> Has a dog named Rex."""
    animal, name = m["animal"].lower(), (m["v"] or "").split()
    if not name or name[0].lower() in STOPWORDS:
        return _fact(f"Has a {animal}", "profile", f"pet:{animal}", "pets")
    return _fact(f"Has a {animal} named {_cap(name[0])}", "profile",
                 f"pet:{animal}:{name[0].lower()}", "pets")


def _has(m: re.Match[str]) -> Candidate | None:
    """'I have two kids' -> Has two kids."""
    what = _clean(m["v"])
    return _fact(f"Has {what}", "profile", f"has:{_slot_key(what)}", "family")


def _likes(m: re.Match[str]) -> Candidate | None:
    """'I love hiking' -> Likes hiking (slot shared with the dislike, so a change UPDATEs)."""
    thing = _clean(m["v"])
    if thing.lower() in _VAGUE or re.match(r"(?:to think|it when|you\b)", thing, re.I):
        return None
    return _fact(f"Likes {thing}", "preference", f"likes:{_slot_key(thing)}", "preferences")


def _dislikes(m: re.Match[str]) -> Candidate | None:
    """"I don't like jazz anymore" -> Dislikes jazz."""
    thing = _clean(m["v"])
    if thing.lower() in _VAGUE:
        return None
    return _fact(f"Dislikes {thing}", "preference", f"likes:{_slot_key(thing)}", "preferences")


def _favorite(m: re.Match[str]) -> Candidate | None:
    """'my favourite colour is blue' -> Favourite colour is blue."""
    thing, value = _clean(m["thing"]).lower(), _clean(m["v"])
    return _fact(f"Favourite {thing} is {value}", "preference", f"favorite:{thing}",
                 "preferences")


def _plan(m: re.Match[str]) -> Candidate | None:
    """"I'm going to visit Rome next month" -> Plan: I'm going to visit Rome next month."""
    what = _clean(m["v"])
    if len(content_words(what)) < 1 or what.lower().startswith(("be ", "say ", "ask ", "go now")):
        return None
    return _fact(f"Plan: {_clean(m.group(0))}", "plan", None, "plans")


def _feeling(m: re.Match[str]) -> Candidate | None:
    """"I'm so stressed about my exam" -> Feels stressed about my exam (the current mood)."""
    rest = re.sub(r"\bmy\b", "their", _clean(m["rest"] or ""), flags=re.I)
    text = f"Feels {m['v'].lower()}" + (f" {rest}" if rest else "")
    return _fact(text, "feeling", "feeling", "feelings")


def _remember(m: re.Match[str]) -> Candidate | None:
    """"Remember that my exam is on Friday" -> the user's own words, top importance."""
    what = m["v"].strip().rstrip(".!")
    if len(content_words(what)) < 1:
        return None
    return _fact(f"Asked to remember: {what}", "explicit", None, "remember")


def _forget(m: re.Match[str]) -> Candidate | None:
    """"Forget that I like jazz" -> DELETE the matching memories."""
    what = m["v"].strip().rstrip(".!")
    return Candidate(text=what, kind="explicit", forget=True) if content_words(what) else None


def _no_pet(m: re.Match[str]) -> Candidate | None:
    """"I don't have a dog" -> Has no dog (the pet's slot: getting one later UPDATEs it)."""
    animal = m["animal"].lower()
    return _fact(f"Has no {animal}", "profile", f"pet:{animal}", "pets")


def _no_family(m: re.Match[str]) -> Candidate | None:
    """"I don't have any kids" -> Has no kids."""
    return _fact(f"Has no {m['v'].lower()}", "profile", f"has:{m['v'].lower()}", "family")


def _rx(pattern: str) -> re.Pattern[str]:
    """Compile a rule pattern (case-insensitive)."""
    return re.compile(pattern, re.IGNORECASE)


RULES: list[Rule] = [
    (_rx(r"^(?:please |can you |could you |and )?forget (?:that |about )?(?P<v>.+)"), _forget),
    (_rx(r"\b(?:please )?(?:remember|don't forget|do not forget|keep in mind|note) (?:that )?"
         r"(?P<v>.{3,200})"), _remember),
    (_rx(rf"\b(?:my name(?:'s| is)|call me|{_I_AM} called) {_NAME}"), _name),
    (_rx(rf"\b(?:{_I_AM} |I just turned |I turned |my age is )(?P<v>\d{{1,3}})"
         r"(?:\s*(?:years?|yrs?)(?: old)?)?(?=\s*(?:[,.!?;]|and\b|$|years))"), _age),
    (_rx(rf"\bI (?:now |currently |still )?(?:live|am living|'m living|reside) in {_PHRASE}"),
     _home),
    (_rx(rf"\bI(?: have|'ve)? (?:just |recently |finally )?(?:moved|relocated) to {_PHRASE}"),
     _home),
    (_rx(rf"\b(?:{_I_AM} (?:originally )?from|I grew up in|I was born in) {_PHRASE}"), _origin),
    (_rx(rf"\b(?:I work|my job is|{_I_AM} working)(?P<how> as)? (?:an? )?{_PHRASE}"), _job),
    (_rx(rf"\b{_I_AM}(?P<how>) an? {_PHRASE}"), _job),
    (_rx(rf"\bI work (?P<prep>at|for) {_PHRASE}"), _workplace),
    (_rx(rf"\bmy (?P<rel>{FAMILY})(?:'s name is| is (?:named|called)| named| called|,) {_NAME}"),
     _relative),
    (_rx(rf"\bmy (?P<animal>{PETS})(?:'s name is| is (?:named|called)| named| called) {_NAME}"),
     _pet),
    (_rx(rf"\bI (?:have|own|got) (?:a|an|one) (?P<animal>{PETS})\b(?:(?: named| called) "
         rf"{_NAME})?"), _pet),
    (_rx(rf"\bI {_DONT} (?:have|own) (?:a|an|any) (?P<animal>{PETS})s?\b"), _no_pet),
    (_rx(rf"\bI {_DONT} have (?:any )?(?P<v>kids|children|siblings|brothers|sisters)\b"),
     _no_family),
    (_rx(rf"\bI have (?P<v>(?:a|an|one|two|three|four|five|\d+) (?:little |young |grown )?"
         rf"(?:{FAMILY}|sons?|daughters?|brothers?|sisters?|grandchildren))\b"), _has),
    (_rx(rf"\bmy (?:favou?rite|fav) (?P<thing>[a-z ]{{2,30}}?) (?:is|are) {_PHRASE}"),
     _favorite),
    (_rx(r"^(?P<v>[\w' -]{2,40}?) (?:is|are) my (?:favou?rite|fav) (?P<thing>[a-z ]{2,30}?)"
         r"(?=[,.!?;]|$)"), _favorite),
    (_rx(rf"\bI (?:really |just |truly |absolutely )?(?:hate|dislike|can't stand|cannot stand|"
         rf"don't like|do not like|don't enjoy|do not enjoy|am not into|'m not into|am not a fan "
         rf"of|'m not a fan of) {_LIST}"), _dislikes),
    (_rx(rf"\b(?:I {_ADV}(?:love|like|enjoy|adore)|{_I_AM} {_ADV}(?:into|passionate about|"
         rf"a (?:big |huge )?fan of)) {_LIST}"), _likes),
    (_rx(rf"\b(?:{_I_AM} (?:going to|planning to|planning on|about to|gonna|hoping to)|"
         rf"I (?:plan|intend|hope) to|I will|I'll be) {_PHRASE}"), _plan),
    (_rx(rf"\b(?:{_I_AM}|I feel|I've been feeling|I have been feeling|I've been|I was) "
         rf"(?:so |really |very |a bit |kind of |pretty |quite |super )?(?P<v>{FEELINGS})\b"
         r"(?P<rest>[^.!?]{0,60})"), _feeling),
]
MIN_EVENT_WORDS = 3  # informative words a turn's leftover statements need to be kept
EVENT_CHARS = 400
# Reactions that carry no fact about the speaker ("Wow, that's awesome, good luck!").
_CHATTER = (
    "awesome great cool nice amazing wow good luck thanks glad sounds fun happy best wish hope "
    "love lovely wonderful fantastic incredible totally sure definitely absolutely agree true "
    "right yep yup nope hey sorry cheers welcome bye soon talk later things thing lot stuff "
    "time day doing know think feel mean guess kind pretty super much many way"
)
CHATTER = frozenset(_CHATTER.split())


def sentences(text: str) -> Iterator[str]:
    """The sentences of a turn, typographic apostrophes made plain."""
    for part in _SENTENCE.split(text.replace("\u2019", "'")):
        part = part.strip()
        if part:
            yield part


# Requests and commands ("Give me a word that rhymes with cat") say nothing about the speaker.
_REQUEST = re.compile(
    r"^(?:(?:please|ok(?:ay)?|so|now|hey|and)[, ]+)*(?:give|tell|write|explain|show|help|name|"
    r"list|describe|translate|summari[sz]e|make|create|find|suggest|recommend|teach|generate|"
    r"compose|draw|count|define|compare|calculate|say|repeat|continue|imagine|pretend|answer|"
    r"let's|let me|can you|could you|would you|will you)\b",
    re.IGNORECASE,
)


# Not a statement of fact about the speaker: a question ("And what do I love doing?"), or a
# hypothetical or wish ("If I had a dog...", "I'd love to live in Japan").
_LEAD = r"^(?:(?:and|so|but|ok(?:ay)?|well|hey|oh|then)[, ]+)*"
_AUX = (r"(?:do|does|did|is|are|am|was|were|can|could|would|should|will|shall|have|has|may|"
        r"might|isn't|aren't|don't|doesn't|didn't)")
_QUESTION = re.compile(  # without its "?": "and what do I love doing", "do I have a dog"
    _LEAD + rf"(?:(?:what|where|when|who|whom|whose|why|how|which)(?: \w+)? {_AUX}|"
    rf"{_AUX} (?:i|you|we|my|me)\b)",
    re.IGNORECASE,
)
_HYPOTHETICAL = re.compile(
    _LEAD + r"(?:if|imagine|suppose|supposing|assume|assuming|pretend|what if|maybe|perhaps|"
    r"hypothetically|in theory|say)\b|\b(?:I would|I'd(?! been)|I wish|I might|I may|I could|"
    r"if I|would love|would like|in my dreams)\b",
    re.IGNORECASE,
)
# A negation earlier in the clause turns what a rule matched into a non-fact ("I don't think I
# love hiking", "It's not that I like jazz").
_NEGATION = re.compile(r"\b(?:not|never|no longer|hardly)\b|n't\b", re.IGNORECASE)
_CLAUSE = re.compile(r"[,;:]|\b(?:but|and|because|although|though)\b", re.IGNORECASE)
_ALWAYS = ("_forget", "_remember")  # commands about memory work in any mood


def not_a_statement(sentence: str) -> bool:
    """A question, or a hypothetical or wish: no fact about the user is read from it."""
    return (sentence.rstrip().endswith("?") or bool(_QUESTION.match(sentence))
            or bool(_HYPOTHETICAL.search(sentence)))


def negated_before(sentence: str, start: int) -> bool:
    """Whether the clause leading up to `start` is negated."""
    return bool(_NEGATION.search(_CLAUSE.split(sentence[:start])[-1]))


def _informative(sentence: str) -> list[str]:
    """Content words that are not chatter."""
    return [w for w in content_words(sentence) if w not in CHATTER]


def _event(leftovers: list[str]) -> Candidate | None:
    """The statements of a turn that no rule took, in the user's words, at low importance.

    Questions and requests are left out; the rest is kept when it carries enough informative
    words, so an episode ("we went to the beach, the kids had a blast") is remembered, not
    only "I ..." sentences.
    """
    statements = [x for x in leftovers if not x.endswith("?") and not _REQUEST.match(x)]
    if len(_informative(" ".join(statements))) < MIN_EVENT_WORDS:
        return None
    return _fact(" ".join(statements)[:EVENT_CHARS], "event", None)


def extract(text: str, subject: str | None = None) -> list[Candidate]:
    """Every candidate fact in one user turn (`subject`: who is speaking, None = the user)."""
    found: dict[tuple[str | None, str], Candidate] = {}
    leftovers = []
    for sentence in sentences(text):
        matched = False
        mood = not_a_statement(sentence)
        for pattern, build in RULES:
            if mood and build.__name__ not in _ALWAYS:
                continue
            for m in pattern.finditer(sentence):
                if build.__name__ not in _ALWAYS and negated_before(sentence, m.start()):
                    continue
                candidate = build(m)
                if candidate is not None:
                    matched = True
                    found.setdefault((candidate.slot, candidate.text.lower()), candidate)
            if matched and build in (_forget, _remember):
                break  # the rest of the sentence is what to remember/forget, not a new fact
        if not matched and not mood:
            leftovers.append(sentence)
    event = _event(leftovers)
    if event is not None:
        found[(None, event.text.lower())] = event
    return [replace(c, subject=subject) if subject else c for c in found.values()]
