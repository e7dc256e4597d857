"""LLM extraction: the model reads one user turn and answers JSON facts, held to a GBNF grammar.

The rules (extract.py) run on every turn; for models that can (`memory_llm_extraction`: auto =
base or larger), the model also gets a short extraction prompt and the user's message and
generates, at temperature 0 and under a token cap, through llama.cpp's grammar sampler:

    {"facts": [{"text": "Has a dog named Rex", "topic": "pets", "importance": 0.8}, ...]}

The grammar allows at most MAX_FACTS facts of at most MAX_FACT_CHARS characters, a topic from
TOPICS and an importance 0-1, so a complete output always parses. A truncated output (the cap
reached) or one that does not parse is a failure: logged as a warning and counted
(`llm_extract_failures`); the rules' facts of that turn are stored all the same. The model's
facts that restate a rule's fact of the same turn are dropped (counted as duplicates); the
rest are reconciled like any candidate (ADD / UPDATE / DELETE / NONE, each in memory_history).

It runs after the reply, on its own thread (LlmExtractor), never on the request path. A turn
that asks to forget something ("forget that I like jazz") is left to the rules alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from companion.config import SIZES
from companion.domain import GenerationOptions
from companion.embed.base import Embedder
from companion.llm.base import Engine, GenerationDone, GenerationRequest
from companion.memory.base import Candidate, Change, Kind
from companion.memory.extract import TOPIC_WORDS, extract
from companion.memory.reconcile import DUPLICATE
from companion.stats import percentile

log = logging.getLogger("companion.memory.llm")

Mode = Literal["auto", "on", "off"]
MAX_FACTS = 5
MAX_FACT_CHARS = 100
MAX_TOKENS = 256  # enough for 5 facts of typical length; a longer output is a (counted) failure
MAX_INPUT_CHARS = 2000  # the end of a longer message (or one the context cannot hold) is
# left to the rules
MIN_AUTO_SIZE = "base"  # auto turns extraction on for this size and larger
SESSION_KEY = "~memory-extraction"  # one KV sequence: the prompt's fixed head is decoded once
QUEUE_SIZE = 64  # turns waiting for extraction; more are skipped (counted, logged)

# The topics the rules use (extract.TOPIC_WORDS plus the rules' own), and the kind of memory a
# model's fact of that topic becomes.
TOPIC_KINDS: dict[str, Kind] = {
    **{topic: "profile" for topic in TOPIC_WORDS},
    "food": "preference", "music": "preference", "sports": "preference", "hobbies": "preference",
    "travel": "event", "identity": "profile", "preferences": "preference", "plans": "plan",
    "feelings": "feeling",
}
TOPICS = tuple(TOPIC_KINDS)

SYSTEM_PROMPT = (
    "You extract facts about the user from the user's message, for a long-term memory. "
    "Answer only with JSON: {\"facts\": [{\"text\": ..., \"topic\": ..., \"importance\": ...}]}. "
    "Each fact is one short statement about the user, in the third person without a subject "
    "(\"Has a dog named Rex\", \"Works as a nurse\", \"Likes hiking\"). Only what the user "
    f"says about themselves; nothing from questions or requests; at most {MAX_FACTS} facts; "
    "{\"facts\": []} when there is none. topic: one of " + ", ".join(TOPICS) + ". "
    "importance: 0 (trivial) to 1 (essential to remember)."
)


def _gbnf_string(text: str) -> str:
    """A GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_grammar(topics: Sequence[str] = TOPICS, max_facts: int = MAX_FACTS,
                  max_chars: int = MAX_FACT_CHARS) -> str:
    """The GBNF grammar of the answer: {"facts": [...]} with at most `max_facts` facts."""
    topic = " | ".join(_gbnf_string(json.dumps(t)) for t in topics)
    more = f' ("," ws fact){{0,{max_facts - 1}}}' if max_facts > 1 else ""
    return "\n".join([
        r'root ::= "{" ws "\"facts\":" ws "[" ws (fact' + more + r')? ws "]" ws "}"',
        r'fact ::= "{" ws "\"text\":" ws text "," ws "\"topic\":" ws topic "," ws '
        r'"\"importance\":" ws importance ws "}"',
        r'text ::= "\"" [^"\\\x00-\x1F\x7F] char{0,' + str(max_chars - 1) + r'} "\""',
        r'char ::= [^"\\\x00-\x1F\x7F] | "\\" ["\\/nt]',
        f"topic ::= {topic}",
        r'importance ::= "0" ("." [0-9] [0-9]?)? | "1" (".0")?',
        r'ws ::= " "?',
    ]) + "\n"


GRAMMAR = build_grammar()


class ExtractionFailed(ValueError):
    """The model's answer was truncated or is not JSON of the schema."""


@dataclass(frozen=True)
class LlmFact:
    """One fact as the model gave it."""

    text: str
    topic: str
    importance: float

    def candidate(self, subject: str | None = None) -> Candidate:
        """The fact as a reconciliation candidate (no slot: matched by meaning)."""
        return Candidate(text=self.text, kind=TOPIC_KINDS[self.topic], topics=(self.topic,),
                         subject=subject, importance=self.importance)


def parse_facts(text: str, finish_reason: str = "stop") -> list[LlmFact]:
    """The facts of one answer; ExtractionFailed when it was cut off or breaks the schema.

    Blank texts are left out (the grammar allows a text of spaces); the same text twice counts
    once.
    """
    if finish_reason == "length":
        raise ExtractionFailed(f"truncated at the token cap after {len(text)} characters")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExtractionFailed(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"facts"} or not isinstance(data["facts"], list):
        raise ExtractionFailed('not {"facts": [...]}')
    if len(data["facts"]) > MAX_FACTS:
        raise ExtractionFailed(f"{len(data['facts'])} facts, more than {MAX_FACTS}")
    facts: dict[str, LlmFact] = {}
    for item in data["facts"]:
        if not isinstance(item, dict) or set(item) != {"text", "topic", "importance"}:
            raise ExtractionFailed(f"a fact is not {{text, topic, importance}}: {item!r}")
        fact_text, topic, importance = item["text"], item["topic"], item["importance"]
        if not isinstance(fact_text, str) or len(fact_text) > MAX_FACT_CHARS:
            raise ExtractionFailed(f"a fact's text is not a string of <= {MAX_FACT_CHARS}")
        if topic not in TOPIC_KINDS:
            raise ExtractionFailed(f"unknown topic {topic!r}")
        if isinstance(importance, bool) or not isinstance(importance, int | float) \
                or not 0.0 <= importance <= 1.0:
            raise ExtractionFailed(f"importance {importance!r} is not a number in [0, 1]")
        fact_text = " ".join(fact_text.split()).rstrip(".")
        if fact_text:
            facts.setdefault(fact_text.lower(), LlmFact(fact_text, topic, float(importance)))
    return list(facts.values())


def extraction_prompt(engine: Engine, message: str, max_tokens: int = MAX_TOKENS) -> list[int]:
    """The tokens of the extraction prompt for one user message (chat template of the model),
    the message cut (its end left to the rules) so that prompt and answer fit the context."""
    text = message[:MAX_INPUT_CHARS]
    while True:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        tokens = engine.tokenize(engine.render_chat(messages))
        over = len(tokens) + max_tokens - engine.info.context_length
        if over <= 0 or not text:
            return tokens
        text = text[: max(0, len(text) - 4 * over - 16)]


async def generate_facts(engine: Engine, message: str,
                         max_tokens: int = MAX_TOKENS) -> tuple[list[LlmFact], GenerationDone]:
    """One grammar-constrained model call; ExtractionFailed if its answer is unusable."""
    request = GenerationRequest(
        extraction_prompt(engine, message, max_tokens),
        GenerationOptions(max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0),
        session_key=SESSION_KEY, grammar=GRAMMAR,
    )
    done: GenerationDone | None = None
    async for event in engine.generate(request):
        if isinstance(event, GenerationDone):
            done = event
    assert done is not None  # every stream ends with its GenerationDone
    return parse_facts(done.text, done.finish_reason), done


def model_can_extract(size: str) -> bool:
    """Whether `auto` turns extraction on for a model of `size` (base or larger)."""
    return size in SIZES and SIZES.index(size) >= SIZES.index(MIN_AUTO_SIZE)


def new_facts(rules: Sequence[Candidate], facts: Sequence[LlmFact], embedder: Embedder,
              ) -> tuple[list[LlmFact], int]:
    """The model's facts that no rule fact of the turn already says, and how many did.

    A fact restates a rule's when the texts are the same or their cosine is >= DUPLICATE.
    """
    if not facts or not rules:
        return list(facts), 0
    vectors = embedder.embed([*(c.text for c in rules), *(f.text for f in facts)])
    ruled, found = np.asarray(vectors[: len(rules)]), vectors[len(rules):]
    texts = {c.text.lower() for c in rules}
    kept = [f for f, v in zip(facts, found, strict=True)
            if f.text.lower() not in texts and float(np.max(ruled @ np.asarray(v))) < DUPLICATE]
    return kept, len(facts) - len(kept)


@dataclass(frozen=True)
class _Turn:
    user_id: str
    text: str
    message_id: int | None
    subject: str | None
    rules: tuple[Candidate, ...]  # what the rules extracted from `text` (the model adds to it)


Reconcile = Callable[[str, list[Candidate], int | None], list[Change]]


class LlmExtractor:
    """Runs LLM extraction of user turns on one background thread, with its counters.

    `engine` gives the engine to use at the time of each turn (a reload swaps it); `reconcile`
    stores candidates (MemoryService.reconcile_candidates).
    """

    def __init__(self, mode: Mode, engine: Callable[[], Engine | None], embedder: Embedder,
                 reconcile: Reconcile, *, max_tokens: int = MAX_TOKENS,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.mode = mode
        self.engine = engine
        self.embedder = embedder
        self.reconcile = reconcile
        self.max_tokens = max_tokens
        self.counts: Counter[str] = Counter()
        self._ms: deque[float] = deque(maxlen=1000)
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Turn | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False

    def active_for(self, engine: Engine | None) -> bool:
        """Whether turns are extracted with `engine` (mode on, or auto and a large enough model)."""
        if engine is None or self.mode == "off":
            return False
        return self.mode == "on" or model_can_extract(engine.info.size)

    def submit(self, user_id: str, text: str, message_id: int | None,
               subject: str | None = None) -> bool:
        """Queue one user turn (after its rules ran); False when extraction is off or full."""
        if self._closed or not self.active_for(self.engine()):
            return False
        rules = tuple(extract(text, subject))
        if any(c.forget for c in rules):  # the model would write back what is forgotten
            log.debug("no LLM extraction for message %s: it asks to forget", message_id)
            return False
        try:
            self._queue.put_nowait(_Turn(user_id, text, message_id, subject, rules))
        except queue.Full:
            self._count("llm_extract_skipped")
            log.warning("LLM extraction skipped for message %s: %d turns already waiting "
                        "(the rules' facts are stored)", message_id, self._queue.maxsize)
            return False
        self._ensure_thread()
        return True

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until every queued turn is done (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stats(self) -> dict[str, float]:
        """llm_extract_calls, _facts, _duplicates, _failures, _skipped, _ms_p50, _ms_p95."""
        with self._lock:
            out: dict[str, float] = {k: 0 for k in ("llm_extract_calls", "llm_extract_facts",
                                                     "llm_extract_failures")}
            out.update(self.counts)
            ms = list(self._ms)
        out["llm_extract_ms_p50"] = round(percentile(ms, 50), 1)
        out["llm_extract_ms_p95"] = round(percentile(ms, 95), 1)
        return out

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking turns and stop the thread: the turn being extracted finishes (up to
        `timeout`), the queued ones are skipped (counted and logged: the model is going away)."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    # internals

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="memory-llm-extract",
                                                daemon=True)
                self._thread.start()

    def _work(self) -> None:
        """The thread: one event loop, one turn at a time."""
        loop = asyncio.new_event_loop()
        try:
            while True:
                turn = self._queue.get()
                try:
                    if turn is None:
                        return
                    if self._closed:
                        self._count("llm_extract_skipped")
                        log.warning("LLM extraction skipped for message %s: shutting down "
                                    "(the rules' facts are stored)", turn.message_id)
                        continue
                    engine = self.engine()
                    if engine is not None:
                        loop.run_until_complete(self._turn(engine, turn))
                except Exception:  # a bug must not stop extraction of later turns
                    self._count("llm_extract_failures")
                    log.exception("LLM extraction of message %s failed",
                                  turn.message_id if turn else None)
                finally:
                    self._queue.task_done()
        finally:
            loop.close()

    async def _turn(self, engine: Engine, turn: _Turn) -> list[Change]:
        """One model call for `turn`, then its new facts reconciled."""
        started = time.perf_counter()
        self._count("llm_extract_calls")
        try:
            facts, done = await generate_facts(engine, turn.text, self.max_tokens)
        except Exception as exc:  # ExtractionFailed, or the engine refused (busy, closed ...)
            self._count("llm_extract_failures")
            log.warning("LLM extraction of message %s failed (%s: %s); the rules' facts are "
                        "kept", turn.message_id, type(exc).__name__, exc)
            return []
        finally:
            with self._lock:
                self._ms.append((time.perf_counter() - started) * 1000)
        self._count("llm_extract_facts", len(facts))
        kept, repeated = await asyncio.to_thread(
            new_facts, turn.rules, facts, self.embedder
        )
        self._count("llm_extract_duplicates", repeated)
        log.debug("LLM extraction of message %s: %d facts, %d new (%d tokens, %s)",
                  turn.message_id, len(facts), len(kept), done.completion_tokens,
                  done.finish_reason)
        if not kept:
            return []
        return await asyncio.to_thread(self.reconcile, turn.user_id,
                                       [f.candidate(turn.subject) for f in kept], turn.message_id)

