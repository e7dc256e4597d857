"""How many prompt tokens a decode step may carry while other sequences are generating.

A step's time is about t_dec (the decode tokens of the running sequences) plus c x the
prompt tokens it carries. To keep a joining prompt from stalling the running streams, a step
with decoding sequences carries about (RATIO - 1) x t_dec / c prompt tokens: the mean step grows
RATIO-fold while a long prompt is prefilled in chunks, and the streams' gap p95 under 2x (at
RATIO 2 the p95 read 1.91-2.09x, at 1.7 1.77-1.92x: docs/engine.md). With
nothing decoding, prompts get the whole step budget. Both t_dec and c are moving averages of
the steps just measured, so the chunk follows the machine's load.

Every prompt waiting for its reply's first token moves by at least FLOOR tokens a step (more
prompts, a larger step): under load, when many turns start at once, a fixed chunk made the
prompts a queue of their own (64 users, 32 slots: 21 admitted requests waited on 8 prompt
tokens a step, TTFT 30 s). The stream rate floor (`streams`) bounds how many sequences share
a step, and so how long those steps get.
"""

from __future__ import annotations

RATIO = 1.7  # a step with a prompt chunk takes about this x a decode step (its p95: ~1.85x)
FLOOR = 8  # prompt tokens a step carries at least (a prompt always progresses)
ALPHA = 0.2


class StepBudget:
    """Prompt-token budget of the next step, from the step times measured so far."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._decode_s: float | None = None  # a step with only decode tokens
        self._token_s: float | None = None  # one prompt token's added cost
        self._seq_s: float | None = None  # a step's time per sequence in it, while decoding

    def prompt_tokens(self, decoding: int, prompts: int = 1) -> int:
        """Prompt tokens the next step may carry beside `decoding` decode tokens, with
        `prompts` prompts waiting for their first token (each moves by FLOOR at least)."""
        room = self.budget - decoding
        if decoding == 0:
            return room
        least = min(room, FLOOR * max(prompts, 1))
        if self._decode_s is None or self._token_s is None:
            return max(least, min(room, 4 * FLOOR))  # not measured yet: a modest chunk
        chunk = int((RATIO - 1) * self._decode_s / self._token_s)
        return max(least, min(room, chunk))

    def streams(self, floor_tps: float, least: int, most: int) -> int:
        """How many sequences may share a step so that each still gets `floor_tps` tokens a
        second (the per-sequence step time measured so far; at least `least`, at most
        `most`; `floor_tps` 0: `most`)."""
        if floor_tps <= 0 or self._seq_s is None:
            return most
        return max(least, min(most, int(1.0 / (floor_tps * self._seq_s))))

    def observe(self, decoding: int, prompt: int, seconds: float, sequences: int = 0) -> None:
        """One step's decode and prompt tokens, the sequences in it and its time."""
        if decoding and sequences:
            self._seq_s = _avg(self._seq_s, seconds / sequences)
        if decoding and not prompt:
            self._decode_s = _avg(self._decode_s, seconds)
        elif prompt and decoding and self._decode_s is not None:
            extra = max(seconds - self._decode_s, 0.0) / prompt
            self._token_s = _avg(self._token_s, max(extra, 1e-6))
        elif prompt and not decoding:
            self._token_s = _avg(self._token_s, seconds / prompt)


def shares(pending: list[int], room: int) -> list[int]:
    """Prompt tokens for each waiting prompt (`pending` tokens each, oldest first) within
    `room`: FLOOR each first, in order, then the rest to the oldest."""
    out = []
    for left in pending:
        out.append(min(left, FLOOR, room))
        room -= out[-1]
    for i, left in enumerate(pending):
        extra = min(left - out[i], room)
        out[i] += extra
        room -= extra
    return out


def _avg(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)
