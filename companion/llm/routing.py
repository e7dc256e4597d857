"""Model switching (the spec's "Model Switching: dynamic selection").

With two models loaded, each message goes to one of them: short, simple messages to the small
model, long or complex ones to the large model. The rule (settings `routing_*`, documented in
docs/engine.md "Model switching") sends a message to the large model when any of these holds:

- it is longer than `routing_max_tokens` tokens (counted with the small model's tokenizer);
- it holds code: a ``` fence, or two or more lines that look like code;
- it asks more than `routing_max_questions` things: question marks, or numbered / bulleted parts;
- it uses a reasoning word or phrase from `routing_keywords` (whole words, any case);
- the session's recent history (what the prompt carries) is over `routing_history_tokens` tokens.

Otherwise it goes to the small model. Each engine keeps its own KV cache, so a session's
cached turns are reused per engine; a turn on the other model does not disturb them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from companion.config import Settings
from companion.domain import Message
from companion.llm.base import Engine

_FENCE = re.compile(r"```|~~~")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |#include|function |return\b|for\s*\(|"
    r"while\s*\(|if\s*\(|SELECT\s|var |let |const |public |private )"
    r"|[;{}]\s*$|^\s*[A-Za-z_][\w.]*\s*=\s*[^=]",
    re.MULTILINE,
)
_PART = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+\S", re.MULTILINE)
_QUESTION = re.compile(r"\?+")


@dataclass(frozen=True)
class RoutingRule:
    """The thresholds of the rule; `signals` names what makes a message complex."""

    max_tokens: int = 32
    max_questions: int = 1
    history_tokens: int = 1500
    keywords: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingRule:
        return cls(
            max_tokens=settings.routing_max_tokens,
            max_questions=settings.routing_max_questions,
            history_tokens=settings.routing_history_tokens,
            keywords=tuple(k.strip().lower() for k in settings.routing_keywords if k.strip()),
        )

    def _keyword_re(self) -> re.Pattern[str] | None:
        if not self.keywords:
            return None
        words = sorted(self.keywords, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def signals(self, text: str, message_tokens: int, history_tokens: int = 0) -> list[str]:
        """Why `text` needs the large model; an empty list means short and simple."""
        found = []
        if message_tokens > self.max_tokens:
            found.append(f"{message_tokens} tokens > {self.max_tokens}")
        if _FENCE.search(text) or len(_CODE_LINE.findall(text)) >= 2:
            found.append("code")
        parts = max(len(_QUESTION.findall(text)), len(_PART.findall(text)))
        if parts > self.max_questions:
            found.append(f"{parts} questions or parts > {self.max_questions}")
        pattern = self._keyword_re()
        if pattern is not None and (match := pattern.search(text)):
            found.append(f"reasoning word {' '.join(match.group(0).lower().split())!r}")
        if self.history_tokens and history_tokens > self.history_tokens:
            found.append(f"history {history_tokens} tokens > {self.history_tokens}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "max_questions": self.max_questions,
            "history_tokens": self.history_tokens,
            "keywords": list(self.keywords),
        }


@dataclass(frozen=True)
class Route:
    """Which engine serves one message, and why."""

    engine: Engine
    role: str  # "small" | "large" | "only" (routing off)
    reasons: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        return self.engine.info.name

    def to_dict(self) -> dict[str, Any]:
        info = self.engine.info
        return {"model": info.name, "size": info.size, "role": self.role,
                "reasons": list(self.reasons)}


class ModelRouter:
    """Chooses between the small engine and the large one (the service's main engine)."""

    def __init__(self, rule: RoutingRule, small: Engine) -> None:
        self.rule = rule
        self.small = small
        self._lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._roles: dict[str, int] = {"small": 0, "large": 0}

    def choose(self, large: Engine, text: str, history: Sequence[Message] = ()) -> Route:
        """The route for `text` given the session's recent `history`; counted per model."""
        message_tokens = self.small.count_tokens(text)
        history_tokens = 0
        if self.rule.history_tokens:
            history_tokens = sum(
                m.token_count if m.token_count is not None else self.small.count_tokens(m.text)
                for m in history
            )
        signals = self.rule.signals(text, message_tokens, history_tokens)
        small_down = self.small.down_reason
        if small_down and not signals:  # failover: the small model stopped
            signals = [f"the small model is down ({small_down})"]
        route = (
            Route(large, "large", tuple(signals))
            if signals
            else Route(self.small, "small", (f"short and simple ({message_tokens} tokens)",))
        )
        with self._lock:
            self._requests[route.model] = self._requests.get(route.model, 0) + 1
            self._roles[route.role] += 1
        return route

    def stats(self, large: Engine) -> dict[str, Any]:
        """Routing state, the rule, requests per model and the small engine's figures."""
        with self._lock:
            requests, roles = dict(self._requests), dict(self._roles)
        small, big = self.small.info, large.info
        return {
            "enabled": True,
            "small": {"model": small.name, "size": small.size},
            "large": {"model": big.name, "size": big.size},
            "rule": self.rule.to_dict(),
            "requests": requests,
            "requests_small": roles["small"],
            "requests_large": roles["large"],
            "small_engine": self.small.stats(),
        }
