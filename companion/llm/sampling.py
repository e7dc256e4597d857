"""Per-request sampling and text: a llama.cpp sampler chain, and tokens turned into safe text.

Each request owns its chain (its own settings, seed and repetition history), so requests
decoded in one batch never share sampler state.
"""

from __future__ import annotations

import codecs
import ctypes
import random
from typing import Any

import llama_cpp
import numpy as np

from companion.domain import GenerationOptions
from companion.errors import GenerationError

PENALTY_LAST_N = 64  # what llama-cpp-python uses (last_n_tokens_size)
MIN_P = 0.05  # llama-cpp-python's create_completion default, kept so outputs match it


class Sampler:
    """A sampler chain built from GenerationOptions; free() it when the request ends.

    With `grammar` (GBNF text, root rule "root") the chain starts with llama.cpp's grammar
    sampler, so only tokens the grammar allows can be chosen (and, once it is complete, only
    the end of generation). A grammar llama.cpp cannot parse raises GenerationError.
    """

    def __init__(self, options: GenerationOptions, n_vocab: int, *, vocab: Any = None,
                 grammar: str | None = None) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chain: Any = chain
        if grammar:
            if vocab is None:
                self.free()
                raise GenerationError("a grammar needs the model's vocabulary")
            constrained = llama_cpp.llama_sampler_init_grammar(
                vocab, grammar.encode("utf-8"), b"root"
            )
            if not constrained:
                self.free()
                raise GenerationError("the grammar is not valid GBNF (llama.cpp refused it)")
            llama_cpp.llama_sampler_chain_add(chain, constrained)
        for sampler in _stages(options, n_vocab):
            llama_cpp.llama_sampler_chain_add(chain, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Sample (and accept) a token from the logits of batch position `index`."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def free(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raise GenerationError unless llama.cpp accepts `grammar` (GBNF with a "root" rule)."""
    Sampler(GenerationOptions(temperature=0.0, repeat_penalty=1.0), 0, vocab=vocab,
            grammar=grammar).free()


def _stages(opts: GenerationOptions, n_vocab: int) -> list[Any]:
    """The chain llama-cpp-python builds: logit bias and penalties (repeat, frequency,
    presence), then greedy or top-k/top-p/min-p/temp/dist."""
    stages: list[Any] = []
    if opts.logit_bias:
        stages.append(_logit_bias(opts.logit_bias, n_vocab))
    if opts.repeat_penalty != 1.0 or opts.frequency_penalty or opts.presence_penalty:
        stages.append(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                opts.repeat_penalty,
                opts.frequency_penalty,
                opts.presence_penalty,
            )
        )
    if opts.temperature <= 0.0:
        return [*stages, llama_cpp.llama_sampler_init_greedy()]
    if opts.top_k > 0:
        stages.append(llama_cpp.llama_sampler_init_top_k(opts.top_k))
    stages.append(llama_cpp.llama_sampler_init_top_p(opts.top_p, 1))
    stages.append(llama_cpp.llama_sampler_init_min_p(MIN_P, 1))
    stages.append(llama_cpp.llama_sampler_init_temp(opts.temperature))
    seed = opts.seed if opts.seed is not None else random.getrandbits(32)
    stages.append(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return stages


def _logit_bias(bias: tuple[tuple[int, float], ...], n_vocab: int) -> Any:
    """llama.cpp's logit-bias sampler; a bias of -100 or less bans the token outright."""
    array = (llama_cpp.llama_logit_bias * len(bias))()
    for i, (token, value) in enumerate(bias):
        array[i].token = token
        array[i].bias = float("-inf") if value <= -100 else value
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), array)


def token_logprobs(
    ctx: Any, index: int, token: int, n_vocab: int, top: int
) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-probability of `token` at batch position `index`, and the `top` best
    (token, log-probability) pairs: a log-softmax of the raw logits (before any sampler)."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    shifted = logits.astype(np.float64) - float(logits.max())
    logz = float(np.log(np.exp(shifted).sum()))
    best: list[tuple[int, float]] = []
    if top > 0:
        ids = np.argpartition(-shifted, top)[:top]
        ids = ids[np.argsort(-shifted[ids])]
        best = [(int(i), float(shifted[i]) - logz) for i in ids]
    return float(shifted[token]) - logz, best


def token_bytes(vocab: Any, token: int) -> bytes:
    """The raw bytes of one token's piece (a character may span tokens)."""
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[:n]


class Detokenizer:
    """Token pieces to text; a multi-byte character split across tokens waits for its end. A
    character still unfinished when the run ends (max_tokens reached inside it) is never
    flushed: it is neither streamed nor stored, as U+FFFD or otherwise."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._buf = ctypes.create_string_buffer(256)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def piece(self, token: int) -> str:
        """The text `token` completes (possibly empty while a character is incomplete)."""
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:  # longer than the buffer: grow it and ask again
            self._buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(
                self._vocab, token, self._buf, len(self._buf), 0, False
            )
        return self._utf8.decode(self._buf.raw[:n])


class StopText:
    """Collects the generated text; releases only what cannot be the start of a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.sent = 0  # characters of `text` already released
        self.stopped = False

    def add(self, piece: str) -> str:
        """Append `piece`; return the newly safe text. Sets `stopped` when a stop string ends it."""
        if self.stopped:
            return ""
        longest = max((len(s) for s in self.stops), default=0)
        start = max(0, len(self.text) - longest + 1)
        self.text += piece
        cut = min((i for i in (self.text.find(s, start) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return self._release(len(self.text))
        return self._release(len(self.text) - self._held())

    def finish(self) -> str:
        """The rest of the text at the end of the run (held-back text included)."""
        return self._release(len(self.text))

    def _held(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _release(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out, self.sent = self.text[self.sent : upto], upto
        return out
