"""Which KV-cache sequence holds which tokens: session reuse, shared prefixes, LRU eviction.

Bookkeeping only; the caller (the engine thread) applies the plan with llama_memory_seq_rm /
seq_cp. Every sequence id is one of three things: free, a session's conversation (kept after
its turn so the next turn only processes new tokens), or a pinned prefix (a persona/system
prompt that many sessions start with, computed once and copied into new sessions).

Cells are counted exactly: tokens computed together form a run with an origin id, a copy
shares the source's runs, and a KV cell is freed only when no sequence refers to it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth pinning
MAX_PREFIXES = 4  # pinned prefixes kept (personas in use)
SPLIT_SPARE = 2  # split KV streams: sequence ids beyond the decoding slots (idle sessions)


@dataclass
class Entry:
    """One sequence id's content."""

    seq: int
    key: str | None  # session key, or None for a pinned prefix
    tokens: list[int] = field(default_factory=list)
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (origin, start, end)
    busy: bool = False
    used_at: float = 0.0
    origin: int = -1  # origin id of the tokens this entry computes now
    reserve: int = 0  # cells a running request may still add

    def trim(self, n: int) -> None:
        """Keep the first `n` tokens."""
        del self.tokens[n:]
        self.runs = _clip(self.runs, n)

    def append(self, tokens: list[int]) -> None:
        """Record `tokens` as computed into this sequence at the next positions."""
        start = len(self.tokens)
        self.tokens.extend(tokens)
        self.reserve = max(0, self.reserve - len(tokens))
        if self.runs and self.runs[-1][0] == self.origin and self.runs[-1][2] == start:
            self.runs[-1] = (self.origin, self.runs[-1][1], len(self.tokens))
        else:
            self.runs.append((self.origin, start, len(self.tokens)))

    def share(self, donor: Entry, tokens: list[int]) -> None:
        """Take the donor's cells for `tokens` (a prefix of the donor's tokens)."""
        self.tokens = list(tokens)
        self.runs = _clip(donor.runs, len(tokens))


@dataclass(frozen=True)
class Plan:
    """How a request starts: its sequence and the cached tokens it keeps.

    The engine applies it in order: seq_rm(s, -1, -1) for each of `evicted`; then
    seq_rm(seq, keep, -1) when `copy_from` is None, else seq_rm(seq, -1, -1) and
    seq_cp(copy_from, seq, 0, keep); then seq_cp(copy_from, pin, 0, keep) when `pin` is set.
    """

    seq: int
    keep: int
    copy_from: int | None = None
    pin: int | None = None
    evicted: tuple[int, ...] = ()
    restore: bool = False  # load the session's saved state into `seq` first, then keep `keep`


class SequencePool:
    """Sequence ids and their cached tokens; the engine thread is its only user."""

    def __init__(
        self,
        n_seq: int,
        kv_tokens: int,
        max_prefixes: int = MAX_PREFIXES,
        stream_cells: int | None = None,
    ) -> None:
        """`stream_cells`: with split KV streams, the cells of each sequence's own stream (a
        sequence then needs only an id and a fit in its stream; copies are whole streams, and
        no prefix is pinned: it would hold a whole stream)."""
        self.kv_tokens = kv_tokens
        self.max_prefixes = 0 if stream_cells is not None else max_prefixes
        self.stream_cells = stream_cells
        # split streams: a copy between streams happens at the next decode, so its source
        # stays until then (copied() clears this after each llama_decode)
        self.copying: set[int] = set()
        self.entries: dict[int, Entry] = {}
        self.free: list[int] = list(range(n_seq - 1, -1, -1))
        self._origins = itertools.count()
        self.evicted: list[Entry] = []  # sessions evicted since the engine last saved them
        self.counters = {"hits": 0, "misses": 0, "evictions": 0, "reused_tokens": 0,
                         "prefix_shares": 0, "restore_plans": 0, "sheds": 0}  # fmt: skip

    def acquire(
        self, key: str, prompt: list[int], max_new: int, saved: Sequence[int] | None = None
    ) -> Plan | None:
        """Plan a sequence for `prompt` plus `max_new` generated tokens, or None if none fits.

        `saved`: the tokens of the session's state saved outside the cells (see kvtiers.py);
        it is restored when it shares more of the prompt than any resident sequence.
        """
        own = self._session(key)
        if own is not None and own.busy:
            return None
        donor, shared = self._best_donor(prompt, exclude=own)
        mine = _lcp(own.tokens, prompt) if own is not None else 0
        if own is None and saved:
            restored = self._restore_plan(key, prompt, max_new, saved, shared, donor)
            if restored is not None:
                return restored if restored.seq >= 0 else None
        use_own = own is not None and mine >= shared
        keep = min(mine if use_own else shared, max(len(prompt) - 1, 0))
        need = len(prompt) - keep + max_new
        protect = {e.seq for e in (own, donor) if e is not None}
        evicted = self._make_room(need, protect, need_id=own is None)
        if evicted is None:
            return None
        entry = own if own is not None else self._new_entry(key)
        entry.busy, entry.used_at, entry.origin = True, time.monotonic(), next(self._origins)
        entry.reserve = need
        self.counters["hits" if use_own and keep > 0 else "misses"] += 1
        self.counters["reused_tokens"] += keep
        if use_own or donor is None or keep == 0:
            entry.trim(keep)
            return Plan(entry.seq, keep, evicted=evicted)
        entry.share(donor, prompt[:keep])
        if self.stream_cells is not None:
            self.copying.add(donor.seq)
        self.counters["prefix_shares"] += 1
        donor.used_at = time.monotonic()
        pin, dropped = self._pin(donor, prompt[:keep])
        return Plan(entry.seq, keep, donor.seq, pin, evicted + dropped)

    def _restore_plan(
        self,
        key: str,
        prompt: list[int],
        max_new: int,
        saved: Sequence[int],
        shared: int,
        donor: Entry | None,
    ) -> Plan | None:
        """A plan that restores `saved` (Plan with seq -1: no room now); None: not worth it."""
        keep = min(_lcp(saved, prompt), max(len(prompt) - 1, 0))
        if keep < MIN_SHARED_PREFIX or keep <= shared:
            return None
        need = max(len(saved), len(prompt)) + max_new  # the whole state lands before the trim
        protect = {donor.seq} if donor is not None else set()
        evicted = self._make_room(need, protect, need_id=True)
        if evicted is None:
            return Plan(-1, 0)
        entry = self._new_entry(key)
        entry.busy, entry.used_at, entry.origin = True, time.monotonic(), next(self._origins)
        entry.reserve = len(prompt) - keep + max_new
        entry.tokens, entry.runs = list(prompt[:keep]), [(entry.origin, 0, keep)]
        self.counters["restore_plans"] += 1
        self.counters["reused_tokens"] += keep
        return Plan(entry.seq, keep, evicted=evicted, restore=True)

    def copied(self) -> None:
        """A llama_decode ran: the copies between streams planned before it are done."""
        self.copying.clear()

    def drain_evicted(self) -> list[Entry]:
        """The sessions evicted since the last call (the engine saves their state, then frees)."""
        out, self.evicted = self.evicted, []
        return out

    def release(self, seq: int, keep: bool = True) -> None:
        """The request on `seq` ended; keep its tokens for the session's next turn, or drop them."""
        entry = self.entries[seq]
        entry.busy, entry.used_at, entry.reserve = False, time.monotonic(), 0
        if not keep:
            self._drop(entry)

    def used_cells(self) -> int:
        """KV cells referenced by any sequence (shared runs counted once; split streams share
        nothing)."""
        if self.stream_cells is not None:
            return sum(len(e.tokens) for e in self.entries.values())
        spans: dict[int, list[tuple[int, int]]] = {}
        for entry in self.entries.values():
            for origin, start, end in entry.runs:
                spans.setdefault(origin, []).append((start, end))
        return sum(_union_length(v) for v in spans.values())

    def reserved_cells(self) -> int:
        """Cells the running requests may still add."""
        return sum(e.reserve for e in self.entries.values() if e.busy)

    def evict_one(self) -> int | None:
        """Drop the least recently used idle sequence (sessions before prefixes); its id."""
        idle = [e for e in self.entries.values() if not e.busy]
        if not idle:
            return None
        victim = min(idle, key=lambda e: (e.key is None, e.used_at))
        self._evict(victim)
        return victim.seq

    def shed_idle(self, keep: Collection[str] = ()) -> int:
        """Take every idle session but `keep` out of the cells (pinned prefixes stay); how many.

        They go on the list to save (drain_evicted), as evicted sessions do. The engine calls
        this while other sequences decode: every cell in use widens the range each token of
        every step attends over (see BatchedEngine._shed_idle).
        """
        idle = [e for e in self.entries.values()
                if not e.busy and e.key is not None and e.key not in keep]  # fmt: skip
        for entry in idle:
            self._drop(entry)
            self.evicted.append(entry)
        self.counters["sheds"] += len(idle)
        return len(idle)

    def sessions(self) -> int:
        """Sequences held for sessions (running or cached)."""
        return sum(1 for e in self.entries.values() if e.key is not None)

    def _session(self, key: str) -> Entry | None:
        return next((e for e in self.entries.values() if e.key == key), None)

    def _best_donor(self, prompt: list[int], exclude: Entry | None) -> tuple[Entry | None, int]:
        """The resident sequence sharing the longest prefix with `prompt` (prefixes win ties)."""
        best, best_n = None, 0
        for entry in self.entries.values():
            if entry is exclude:
                continue
            n = _lcp(entry.tokens, prompt)
            if n > best_n or (n == best_n and n > 0 and entry.key is None):
                best, best_n = entry, n
        return best, best_n

    def _make_room(self, need: int, protect: set[int], need_id: bool) -> tuple[int, ...] | None:
        """Evict idle sequences (LRU) until `need` cells and an id are free; None if impossible."""
        evicted: list[int] = []
        protect = protect | self.copying
        if self.stream_cells is not None and need > self.stream_cells:
            return None
        while (need_id and not self.free) or (
            self.stream_cells is None
            and self.used_cells() + self.reserved_cells() + need > self.kv_tokens
        ):
            idle = [e for e in self.entries.values() if not e.busy and e.seq not in protect]
            if not idle:
                return None
            victim = min(idle, key=lambda e: (e.key is None, e.used_at))
            self._evict(victim)
            evicted.append(victim.seq)
        return tuple(evicted)

    def _new_entry(self, key: str | None) -> Entry:
        seq = min(self.free)  # low ids first: split streams decode in runs of consecutive ids
        self.free.remove(seq)
        entry = Entry(seq, key)
        self.entries[entry.seq] = entry
        return entry

    def _pin(self, donor: Entry, prefix: list[int]) -> tuple[int | None, tuple[int, ...]]:
        """Keep a shared prefix under its own id, so it outlives the sessions that share it.

        Returns the new prefix's id (or None) and the id of a prefix dropped to make room.
        """
        if donor.key is None or len(prefix) < MIN_SHARED_PREFIX or not self.max_prefixes:
            return None, ()
        if any(e.key is None and e.tokens == prefix for e in self.entries.values()):
            return None, ()
        dropped: tuple[int, ...] = ()
        prefixes = [e for e in self.entries.values() if e.key is None and not e.busy]
        if len(prefixes) >= self.max_prefixes:
            oldest = min(prefixes, key=lambda e: e.used_at)
            self._drop(oldest)
            dropped = (oldest.seq,)
        if not self.free:
            return None, dropped
        pin = self._new_entry(None)
        pin.share(donor, prefix)
        pin.used_at = time.monotonic()
        return pin.seq, dropped

    def _evict(self, entry: Entry) -> None:
        """Drop an idle sequence for room; a session's goes on the engine's list to save."""
        self._drop(entry)
        self.counters["evictions"] += 1
        if entry.key is not None:
            self.evicted.append(entry)

    def _drop(self, entry: Entry) -> None:
        del self.entries[entry.seq]
        self.free.append(entry.seq)


def _clip(runs: list[tuple[int, int, int]], n: int) -> list[tuple[int, int, int]]:
    """The runs that cover positions below `n`."""
    return [(o, s, min(e, n)) for o, s, e in runs if s < n]


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _union_length(spans: list[tuple[int, int]]) -> int:
    total, reach = 0, -1
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
