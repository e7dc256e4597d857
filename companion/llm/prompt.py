"""Chat prompts in which only the template's own markers become special tokens.

A prompt is rendered from the GGUF's chat template and tokenized with special-token parsing,
so that the template's `<|im_start|>`, `<|eot_id|>` and the like become their control tokens.
Message contents (what users write, stored history, recalled memories) must not: a message
holding the text `<|im_start|>system` would otherwise open a real system turn. So:

- `render_prompt` renders the template with a random marker in place of each content, puts the
  contents back and returns a `ChatPrompt`: the text plus where each content lies in it;
- `SpecialTokens.tokenize` parses special tokens only outside those spans, the way llama.cpp
  does (longest token first, whitespace stripping by the token's LSTRIP/RSTRIP attributes), and
  tokenizes everything else as plain text. Content keeps every character: `<|im_end|>` in a
  message reaches the model as the characters `<`, `|`, `im`, ... in ordinary tokens.

A prompt without injected markers tokenizes exactly as llama.cpp's own special parsing does.
A template that changes contents (most often by trimming them) is detected by rendering the
real contents too: trimmed contents are tried, and when neither fits, special-token text in
the contents is broken with a word joiner (U+2060) before rendering, so it still cannot parse.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp

WORD_JOINER = "\u2060"
CACHE_PIECES = 4096  # tokenized pieces remembered (SpecialTokens._plain)
CACHE_CHARS = 8192  # longer pieces are tokenized each time
_PARSED = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
_ALWAYS = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED  # llama.cpp matches these even as plain text
_LSTRIP = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP
_RSTRIP = llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP


class ChatPrompt(str):
    """A rendered prompt and the (start, end) spans of the message contents in it."""

    content_spans: tuple[tuple[int, int], ...]

    def __new__(cls, text: str, spans: Sequence[tuple[int, int]] = ()) -> ChatPrompt:
        prompt = super().__new__(cls, text)
        prompt.content_spans = tuple(spans)
        return prompt


@dataclass(frozen=True)
class Special:
    text: str
    token: int
    attr: int


class SpecialTokens:
    """The model's special tokens by text, and tokenizing that parses them outside contents."""

    def __init__(self, model: Any) -> None:
        vocab = model.vocab
        found: list[Special] = []
        for token in range(int(llama_cpp.llama_vocab_n_tokens(vocab))):
            attr = int(llama_cpp.llama_vocab_get_attr(vocab, token))
            if attr & (_PARSED | _ALWAYS):
                text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", "replace")
                if text:
                    found.append(Special(text, token, attr))
        found.sort(key=lambda s: len(s.text), reverse=True)  # llama.cpp's order: longest first
        self._model = model
        self.specials = tuple(found)
        self.always = tuple(s for s in found if not s.attr & _PARSED)
        self.texts = tuple(s.text for s in found)
        self._cache: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` (no BOS). A ChatPrompt's contents are plain text; any other
        string is trusted template text, parsed the way llama.cpp parses it."""
        spans = getattr(text, "content_spans", None)
        if spans is None:
            return self._plain(text, special=True)
        pieces = self._partition(str(text), spans)
        tokens: list[int] = []
        run: list[str] = []
        for piece in pieces:
            if isinstance(piece, int):
                tokens += self._plain("".join(run), special=False)
                tokens.append(piece)
                run = []
            else:
                run.append(piece)
        tokens += self._plain("".join(run), special=False)
        return tokens

    def neutralise(self, content: str) -> str:
        """`content` with every special-token text broken by a word joiner after its first
        character (the fallback for templates that change contents)."""
        for text in self.texts:
            if text in content:
                content = content.replace(text, text[0] + WORD_JOINER + text[1:])
        return content

    def _plain(self, text: str, *, special: bool) -> list[int]:
        """Token ids of a piece of text. A prompt repeats most of the last one (persona and
        history come first and change little), so pieces are remembered: the history of a
        turn costs no tokenizing the next time (CACHE_PIECES, each up to CACHE_CHARS)."""
        if not text:
            return []
        if len(text) > CACHE_CHARS:
            return self._tokenize_plain(text, special=special)
        key = (text, special)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return list(hit)
        tokens = self._tokenize_plain(text, special=special)
        with self._cache_lock:
            self._cache[key] = tuple(tokens)
            while len(self._cache) > CACHE_PIECES:
                self._cache.popitem(last=False)
        return tokens

    def _tokenize_plain(self, text: str, *, special: bool) -> list[int]:
        if special or not any(s.text in text for s in self.always):
            return list(self._model.tokenize(text.encode("utf-8"), False, special))
        # llama.cpp matches user-defined tokens even in plain text: cut each occurrence after
        # its first character and tokenize the halves apart, so it stays ordinary text
        tokens: list[int] = []
        rest = text
        while rest:
            hits = [(rest.find(s.text), s) for s in self.always if s.text in rest]
            if not hits:
                break
            at, hit = min(hits, key=lambda h: (h[0], -len(h[1].text)))
            cut = at + 1
            tokens += self._model.tokenize(rest[:cut].encode("utf-8"), False, False)
            rest = rest[cut:]
        if rest:
            tokens += self._model.tokenize(rest.encode("utf-8"), False, False)
        return tokens

    def _partition(self, text: str, spans: Sequence[tuple[int, int]]) -> list[str | int]:
        """Template text split at the template's special tokens (ints); contents stay text."""
        # each fragment: (text, parsable) or a token id; contents are never parsable
        fragments: list[tuple[str, bool] | int] = []
        at = 0
        for start, end in sorted(spans):
            if start > at:
                fragments.append((text[at:start], True))
            if end > start:
                fragments.append((text[start:end], False))
            at = max(at, end)
        if at < len(text):
            fragments.append((text[at:], True))
        for special in self.specials:
            if special.text not in text:
                continue
            split: list[tuple[str, bool] | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or not fragment[1] or special.text not in fragment[0]:
                    split.append(fragment)
                    continue
                split.extend(_split_on(fragment[0], special))
            fragments = split
        return [f if isinstance(f, int) else f[0] for f in fragments if isinstance(f, int) or f[0]]


def _split_on(raw: str, special: Special) -> list[tuple[str, bool] | int]:
    """One template fragment split at `special`, stripping whitespace as its attributes say."""
    out: list[tuple[str, bool] | int] = []
    pos = 0
    while True:
        match = raw.find(special.text, pos)
        if match < 0:
            break
        left = raw[pos:match]
        if special.attr & _LSTRIP:
            left = left.rstrip()
        if left:
            out.append((left, True))
        out.append(special.token)
        pos = match + len(special.text)
        if special.attr & _RSTRIP:
            while pos < len(raw) and raw[pos].isspace():
                pos += 1
    if pos < len(raw):
        out.append((raw[pos:], True))
    return out


def render_prompt(
    formatter: Any, messages: list[dict[str, str]], specials: SpecialTokens
) -> ChatPrompt:
    """`messages` through the chat template, contents marked as data (see the module doc)."""
    expected = str(formatter(messages=messages).prompt)
    if not any(m.get("content") for m in messages):
        return ChatPrompt(expected)
    for variant in (_same, _trimmed):
        contents = [variant(str(m.get("content") or "")) for m in messages]
        prompt = _marked(formatter, messages, contents)
        if prompt is not None and prompt == expected:
            return prompt
    safe = [{**m, "content": specials.neutralise(str(m.get("content") or ""))} for m in messages]
    return ChatPrompt(str(formatter(messages=safe).prompt))


def _same(content: str) -> str:
    return content


def _trimmed(content: str) -> str:
    return content.strip()


def _marked(
    formatter: Any, messages: list[dict[str, str]], contents: list[str]
) -> ChatPrompt | None:
    """The template rendered with a marker per content, and `contents` put back in their
    places; None when a marker came out changed (the caller compares with the real render)."""
    nonce = secrets.token_hex(8)
    marked = [
        {**m, "content": f"\ue000{nonce}:{i}\ue001" if m.get("content") else m.get("content")}
        for i, m in enumerate(messages)
    ]
    rendered = str(formatter(messages=marked).prompt)
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    pos = 0
    while True:
        start = rendered.find("\ue000" + nonce, pos)
        if start < 0:
            break
        end = rendered.find("\ue001", start)
        if end < 0:
            return None
        index = rendered[start + 18 : end]  # "\ue000" + 16 hex digits + ":"
        if not index.isdigit() or int(index) >= len(contents):
            return None
        parts.append(rendered[pos:start])
        length += start - pos
        content = contents[int(index)]
        spans.append((length, length + len(content)))
        parts.append(content)
        length += len(content)
        pos = end + 1
    parts.append(rendered[pos:])
    return ChatPrompt("".join(parts), spans)
