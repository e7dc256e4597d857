"""The in-process search index of each user's facts and episodes: SQLite FTS5 plus vectors.

(The memory service uses this index on SQLite and on PostgreSQL alike, loaded through
SQLAlchemy Core: recall ranks facts and turns with each turn's conversation context, which
memory/pg_index.py, the in-database search of facts (`SearchIndex` in memory/base.py), does
not hold yet.)

The database holds the memories; this index holds, per loaded user, an FTS5 table (in an
in-memory SQLite connection, so its shadow tables never touch the main schema, and the same
code serves a PostgreSQL store) and the vectors as one growable float32 matrix (a new turn is
one appended row, never a rebuild). Facts and episodes share both, so their full-text scores
are on one scale: a fact's key is 2 * id, an episode's 2 * id + 1. A user is loaded on first
use and dropped when the least recently used of more than `max_users`.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import numpy as np

from companion.embed.base import Vector
from companion.memory.base import Episode, Item, Memory
from companion.memory.extract import content_words

SEARCH_LIMIT = 100  # candidates taken from each of the text and the vector search
CONTEXT_WEIGHT = 0.5  # share of the previous turn's vector in a turn's indexed vector
CONTEXT_BM25 = 0.3  # weight of the previous turn's words (ctx column) in bm25
SAME_CONVERSATION = timedelta(hours=6)  # a gap after which a turn has no previous turn
CONTEXT_CHARS = 200  # the end of the previous turn (what a turn answers) is its context
CONTEXT_VECTOR_CHARS = 400  # a longer previous turn is about itself: its vector stays out
_SUFFIXES = ("ingly", "edly", "ings", "ing", "ied", "ies", "ed", "es", "s", "ly")


def stem(word: str) -> str:
    """A light suffix-stripping stem ("baking", "baked", "bakes" -> "bak")."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def stem_terms(text: str) -> list[str]:
    """The stems of a text's content words, in order, repeats removed."""
    return list(dict.fromkeys(stem(w) for w in content_words(text)))


class TermStats:
    """Document frequencies of stems over one user's items (for absolute term coverage)."""

    def __init__(self) -> None:
        self.docs = 0
        self.df: Counter[str] = Counter()

    def add(self, stems: frozenset[str]) -> None:
        """Count one item's stems."""
        self.docs += 1
        self.df.update(stems)

    def remove(self, stems: frozenset[str]) -> None:
        """Uncount one item's stems."""
        self.docs -= 1
        self.df.subtract(stems)

    def idf(self, term: str) -> float:
        """BM25's idf of a stem (an unseen stem gets the highest)."""
        df = max(0, self.df.get(term, 0))
        return math.log((self.docs - df + 0.5) / (df + 0.5) + 1.0)


def fts_query(text: str) -> str | None:
    """An FTS5 query OR-ing the content words of `text` (each quoted), or None if none."""
    terms = dict.fromkeys(w.replace('"', "").strip("'") for w in content_words(text))
    quoted = [f'"{t}"' for t in terms if t]
    return " OR ".join(quoted) if quoted else None


def fact_key(memory_id: int) -> int:
    """A fact's key in the index."""
    return memory_id * 2


def episode_key(episode_id: int) -> int:
    """An episode's key in the index."""
    return episode_id * 2 + 1


def _dot(matrix: np.ndarray, vector: Vector) -> np.ndarray:
    """matrix @ vector in one thread: OpenBLAS's threads made a 6,000-row product 16 ms
    instead of 0.65 ms on a busy 2-core machine (einsum's own loop never spawns threads)."""
    return np.einsum("ij,j->i", matrix, np.asarray(vector, dtype=np.float32))


# a row's flags (Vectors.flags)
EPISODE, ASSISTANT, SUPERSEDED, NO_VECTOR = 1, 2, 4, 8


class Vectors:
    """Rows of unit vectors by key, with what recall scores each item by (times, importance,
    flags, session and speaker codes) in parallel arrays: appended in place, removed by
    marking, compacted lazily. Every indexed item has a row (a zero vector when it has none,
    flagged NO_VECTOR and never found by similarity)."""

    COLUMNS = (("created", np.float64, 0), ("last", np.float64, 0), ("importance", np.float32, 0),
               ("flags", np.int8, 0), ("session", np.int32, 0), ("subject", np.int32, -1))

    def __init__(self, dim: int) -> None:
        self.matrix = np.zeros((64, dim), dtype=np.float32)
        self.keys = np.full(64, -1, dtype=np.int64)
        self.columns = {name: np.full(64, fill, dtype=kind) for name, kind, fill in self.COLUMNS}
        self.size = 0
        self.dead = 0
        self.row_of: dict[int, int] = {}
        # sentence rows (a long turn's sentences), appended in groups, one group per row that
        # has them: group g holds sentence rows start[g] up to start[g + 1] (the last: `used`)
        # and belongs to row group_row[g] (-1: gone, dropped at the next compaction)
        self.sentences = np.zeros((0, dim), dtype=np.float32)
        self.used = 0
        self.start = np.zeros(0, dtype=np.int64)
        self.group_row = np.zeros(0, dtype=np.int64)
        self.groups = 0
        self.parts: dict[int, int] = {}  # row -> its group

    def put(self, key: int, vector: Vector | None, values: dict[str, float] | None = None,
            sentences: Vector | None = None) -> None:
        """Set the row of `key` (a new row; the old one, if any, is marked dead), with its
        sentence vectors (None: those the old row had, if any)."""
        old = self.row_of.get(key)
        kept = self.parts.pop(old, None) if old is not None and sentences is None else None
        self.remove(key)
        if self.size == len(self.keys):
            self._grow()
        row = self.size
        self.matrix[row] = 0.0 if vector is None else vector
        self.keys[row] = key
        for name, value in (values or {}).items():
            self.columns[name][row] = value
        if vector is None:
            self.columns["flags"][row] |= NO_VECTOR
        self.row_of[key] = row
        self.size += 1
        if kept is not None:  # the same turn again (e.g. marked superseded): same sentences
            self.group_row[kept] = row
            self.parts[row] = kept
        elif sentences is not None and len(sentences) and vector is not None:
            self._add_sentences(row, sentences)

    def _add_sentences(self, row: int, sentences: Vector) -> None:
        """Append a row's sentence vectors as one group."""
        n = len(sentences)
        if self.used + n > len(self.sentences) or self.groups == len(self.start):
            self._compact_sentences(n)
        self.sentences[self.used:self.used + n] = sentences
        self.start[self.groups] = self.used
        self.group_row[self.groups] = row
        self.parts[row] = self.groups
        self.groups += 1
        self.used += n

    def _compact_sentences(self, room: int) -> None:
        """Drop the groups of removed rows; grow (or shrink) so that `room` more rows fit."""
        ends = np.append(self.start[1:self.groups], self.used)
        live = [g for g in range(self.groups) if self.group_row[g] >= 0]
        n = sum(int(ends[g] - self.start[g]) for g in live)
        size = max(64, len(self.sentences))
        while size < n + room or (size > 64 and n + room <= size // 4):
            size = size * 2 if size < n + room else size // 2
        sentences = np.zeros((size, self.matrix.shape[1]), dtype=np.float32)
        slots = max(16, 2 * (len(live) + 1))
        start = np.zeros(slots, dtype=np.int64)
        group_row = np.full(slots, -1, dtype=np.int64)
        at = 0
        for i, g in enumerate(live):
            width = int(ends[g] - self.start[g])
            sentences[at:at + width] = self.sentences[self.start[g]:ends[g]]
            start[i], group_row[i] = at, self.group_row[g]
            at += width
        self.sentences, self.start, self.group_row = sentences, start, group_row
        self.used, self.groups = at, len(live)
        self.parts = {int(group_row[i]): i for i in range(len(live))}

    def _sentence_best(self, vector: Vector) -> tuple[np.ndarray, np.ndarray]:
        """(rows, best cosine of each one's sentences with `vector`) of the rows that have
        sentences: one product, then the best of each group (contiguous: reduceat)."""
        found = _dot(self.sentences[: self.used], vector)
        best = np.maximum.reduceat(found, self.start[: self.groups])
        rows = self.group_row[: self.groups]
        live = rows >= 0
        return rows[live], best[live]

    def remove(self, key: int) -> None:
        """Forget `key`'s row (and its sentence rows)."""
        row = self.row_of.pop(key, None)
        if row is not None:
            self.keys[row] = -1
            self.matrix[row] = 0.0
            self.dead += 1
            group = self.parts.pop(row, None)
            if group is not None:
                self.group_row[group] = -1

    def _grow(self) -> None:
        """Compact when half the rows are dead, else double the capacity."""
        live = self.keys[: self.size] >= 0
        if self.dead * 2 >= self.size:
            n = int(live.sum())
            self.matrix[:n] = self.matrix[: self.size][live]
            self.keys[:n] = self.keys[: self.size][live]
            for column in self.columns.values():
                column[:n] = column[: self.size][live]
            moved = np.cumsum(live) - 1  # old row -> new row (for live rows)
            owned = self.group_row[: self.groups] >= 0
            self.group_row[: self.groups][owned] = moved[self.group_row[: self.groups][owned]]
            self.parts = {int(moved[row]): group for row, group in self.parts.items()}
            self.size, self.dead = n, 0
            self.keys[self.size:] = -1
            self.row_of = {int(k): i for i, k in enumerate(self.keys[: self.size])}
            if self.size < len(self.keys):
                return
        self.matrix = np.vstack([self.matrix, np.zeros_like(self.matrix)])
        self.keys = np.concatenate([self.keys, np.full(len(self.keys), -1, dtype=np.int64)])
        self.columns = {name: np.concatenate([column, np.zeros_like(column)])
                        for name, column in self.columns.items()}

    def scan(self, vector: Vector) -> np.ndarray:
        """Cosine of every row with `vector`, a turn's the best of its own and its sentences'
        (-2 for dead rows and rows without a vector)."""
        sims = _dot(self.matrix[: self.size], vector)
        if self.groups:
            rows, best = self._sentence_best(vector)
            sims[rows] = np.maximum(sims[rows], best)
        sims[(self.keys[: self.size] < 0) | (self.columns["flags"][: self.size] & NO_VECTOR > 0)
             ] = -2.0
        return sims

    def top(self, sims: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(key, cosine) of the `limit` best rows of a scan, best first."""
        n = min(limit, int((sims > -2.0).sum()))
        if n <= 0:
            return []
        top = np.argpartition(-sims, n - 1)[:n]
        top = top[np.argsort(-sims[top])]
        return [(int(self.keys[i]), float(sims[i])) for i in top]

    def similarities(self, keys: Iterable[int], vector: Vector) -> dict[int, float]:
        """Cosine of some keys' vectors with `vector`."""
        flags = self.columns["flags"]
        rows = [(key, row) for key in keys if (row := self.row_of.get(key)) is not None
                and not flags[row] & NO_VECTOR]
        if not rows:
            return {}
        sims = _dot(self.matrix[[r for _, r in rows]], vector)
        out = {key: float(s) for (key, _), s in zip(rows, sims, strict=True)}
        for key, row in rows:
            group = self.parts.get(row)
            if group is not None:
                end = self.start[group + 1] if group + 1 < self.groups else self.used
                best = float(_dot(self.sentences[self.start[group]:end], vector).max())
                out[key] = max(out[key], best)
        return out

    def search(self, vector: Vector, limit: int) -> list[tuple[int, float]]:
        """(key, cosine) of the `limit` nearest, best first."""
        if self.size == self.dead:
            return []
        return self.top(self.scan(vector), limit)


class _UserIndex:
    """One user's facts and episodes, their FTS5 table, vectors, turn order and term counts."""

    def __init__(self, table: str, dim: int) -> None:
        self.table = table
        self.facts: dict[int, Memory] = {}
        self.episodes: dict[int, Episode] = {}
        self.vectors = Vectors(dim)
        self.terms = TermStats()
        self.stems: dict[int, frozenset[str]] = {}
        self.prev: dict[int, int] = {}  # episode key -> the turn before it in its session
        self.next: dict[int, int] = {}
        self._last: dict[str | None, Episode] = {}  # per session, its newest turn
        self.sessions: dict[str, int] = {}  # session id -> code (Vectors.columns; none: -1)
        self.subjects: dict[str, int] = {}  # speaker -> code

    def values(self, item: Item) -> dict[str, float]:
        """The row values recall scores an item by (see Vectors)."""
        last = item.last_used_at or item.updated_at
        flags = 0
        session = 0
        if isinstance(item, Episode):
            flags = EPISODE | (ASSISTANT if item.role == "assistant" else 0) | (
                SUPERSEDED if item.superseded_at is not None else 0)
            session = (-1 if item.session_id is None  # a turn outside any conversation
                       else self.sessions.setdefault(item.session_id, len(self.sessions)))
        subject = (-1 if not item.subject
                   else self.subjects.setdefault(item.subject, len(self.subjects)))
        return {"created": item.created_at.timestamp(), "last": last.timestamp(),
                "importance": item.importance, "flags": flags, "session": session,
                "subject": subject}

    def get(self, key: int) -> Item | None:
        """The item of a key."""
        return self.facts.get(key // 2) if key % 2 == 0 else self.episodes.get(key // 2)

    def add(self, item: Item) -> tuple[str, Vector | None]:
        """Record an item; returns its context text and the vector to index.

        A turn is indexed with the turn before it in the same conversation (the question
        it answers): the end of its text in the `ctx` column, and (when short) its vector
        blended in at CONTEXT_WEIGHT.
        """
        known = item.key in self.stems
        self.discard(item.key)
        stems = frozenset(stem_terms(f"{item.text} {item.subject or ''}"))
        self.stems[item.key] = stems
        self.terms.add(stems)
        if not isinstance(item, Episode):
            self.facts[item.id] = item
            return "", item.embedding
        self.episodes[item.id] = item
        if known:  # a changed row of a known turn: its place in the conversation stays
            before = self.episodes.get(self.prev.get(item.key, -1) // 2)
        else:
            before = self._last.get(item.session_id)
            self._last[item.session_id] = item
        if (before is None or before.created_at > item.created_at
                or item.created_at - before.created_at > SAME_CONVERSATION):
            return "", item.embedding
        self.prev[item.key], self.next[before.key] = before.key, item.key
        context = before.text[-CONTEXT_CHARS:]
        if (item.embedding is None or before.embedding is None
                or len(before.text) > CONTEXT_VECTOR_CHARS):
            return context, item.embedding
        blend = item.embedding + CONTEXT_WEIGHT * before.embedding
        return context, (blend / max(float(np.linalg.norm(blend)), 1e-9)).astype(np.float32)

    def discard(self, key: int) -> None:
        """Forget an item's record (not its vector)."""
        item = self.facts.pop(key // 2, None) if key % 2 == 0 else self.episodes.pop(key // 2, None)
        stems = self.stems.pop(key, None)
        if item is not None and stems is not None:
            self.terms.remove(stems)


class MemoryIndex:
    """Full-text and vector search over the facts and turns of recently active users."""

    def __init__(self, dim: int, max_users: int = 256) -> None:
        """`dim`: vector size; `max_users`: users kept loaded at once."""
        self.dim = dim
        self.max_users = max_users
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._users: OrderedDict[str, _UserIndex] = OrderedDict()
        self._names = itertools.count()
        self._lock = threading.RLock()

    @contextmanager
    def holding(self, user_id: str) -> Iterator[_UserIndex | None]:
        """A loaded user's index, held (no other thread changes it) until the block ends."""
        with self._lock:
            yield self._users.get(user_id)

    def loaded(self, user_id: str) -> bool:
        """Whether a user's index is in memory."""
        with self._lock:
            return user_id in self._users

    def ensure(self, user_id: str, load: Callable[[str], Iterable[Item]]) -> None:
        """Load a user's facts and episodes with `load` unless already loaded."""
        with self._lock:
            if user_id in self._users:
                self._users.move_to_end(user_id)
                return
            index = _UserIndex(f"fts_{next(self._names)}", self.dim)
            self._conn.execute(f"CREATE VIRTUAL TABLE {index.table} USING fts5("
                               "text, ctx, topics, tokenize='porter unicode61')")
            self._users[user_id] = index
            self.put_many(user_id, load(user_id))
            while len(self._users) > self.max_users:
                self.drop(next(iter(self._users)))

    def put_many(self, user_id: str, items: Iterable[Item]) -> None:
        """Insert or replace facts and episodes of a loaded user (episodes in time order)."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return
            fresh = list({m.key: m for m in items}.values())  # one row per key (the last given)
            self._conn.executemany(f"DELETE FROM {index.table} WHERE rowid = ?",
                                   [(m.key,) for m in fresh])
            rows = []
            for m in fresh:
                context, vector = index.add(m)
                rows.append((m.key, m.text + (f" {m.subject}" if m.subject else ""),
                             context, " ".join(m.topics)))
                index.vectors.put(m.key, vector, index.values(m),
                                  getattr(m, "sentence_vectors", None))
            self._conn.executemany(
                f"INSERT INTO {index.table}(rowid, text, ctx, topics) VALUES (?, ?, ?, ?)", rows)

    def remove(self, user_id: str, keys: Iterable[int]) -> None:
        """Forget facts or episodes (by key) of a loaded user."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return
            for key in keys:
                index.discard(key)
                index.vectors.remove(key)
                self._conn.execute(f"DELETE FROM {index.table} WHERE rowid = ?", (key,))

    def drop(self, user_id: str) -> None:
        """Unload a user (after deleting all their data, or to make room)."""
        with self._lock:
            index = self._users.pop(user_id, None)
            if index is not None:
                self._conn.execute(f"DROP TABLE {index.table}")

    def facts(self, user_id: str) -> dict[int, Memory]:
        """The loaded facts of a user by id (empty when not loaded)."""
        with self._lock:
            index = self._users.get(user_id)
            return dict(index.facts) if index else {}

    def episodes(self, user_id: str) -> dict[int, Episode]:
        """The loaded episodes of a user by id (empty when not loaded)."""
        with self._lock:
            index = self._users.get(user_id)
            return dict(index.episodes) if index else {}

    def get(self, user_id: str, keys: Iterable[int]) -> dict[int, Item]:
        """The items of some keys (those still there)."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return {}
            found = {key: index.get(key) for key in keys}
        return {k: v for k, v in found.items() if v is not None}

    def context(self, user_id: str, query_terms: list[str]) -> tuple[
            dict[int, int], dict[int, int], dict[int, frozenset[str]], dict[str, float]]:
        """(previous turn, next turn, stems of each item, idf of each query term) of a user."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return {}, {}, {}, {}
            idf = {t: index.terms.idf(t) for t in query_terms}
            return index.prev, index.next, index.stems, idf

    def fetch(self, user_id: str, ids: Iterable[int]) -> dict[int, Memory]:
        """These loaded memories of the user by id."""
        with self._lock:
            index = self._users.get(user_id)
            held = index.facts if index else {}
            return {i: held[i] for i in ids if i in held}

    def text_search(self, user_id: str, query: str, limit: int = SEARCH_LIMIT,
                    column: str | None = None) -> list[tuple[int, float]]:
        """(key, bm25) best first; bm25 is negative, lower is better."""
        match = fts_query(query)
        with self._lock:
            index = self._users.get(user_id)
            if index is None or match is None:
                return []
            if column is not None:
                match = f"{column} : ({match})"
            rank = f"bm25({index.table}, 1.0, {CONTEXT_BM25}, 1.0)"
            rows = self._conn.execute(
                f"SELECT rowid, {rank} FROM {index.table} WHERE {index.table} "
                f"MATCH ? ORDER BY {rank} LIMIT ?", (match, limit),
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def vector_search(self, user_id: str, vector: Vector,
                      limit: int = SEARCH_LIMIT) -> list[tuple[int, float]]:
        """(key, cosine similarity) best first."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return []
            return index.vectors.search(vector, limit)

    def said_between(self, user_id: str, start: datetime | None, end: datetime | None,
                     limit: int) -> set[int]:
        """Keys of the newest `limit` turns said in [start, end)."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return set()
            vectors = index.vectors
            created = vectors.columns["created"][: vectors.size]
            inside = (vectors.keys[: vectors.size] >= 0) & (
                vectors.columns["flags"][: vectors.size] & EPISODE > 0)
            if start is not None:
                inside &= created >= start.timestamp()
            if end is not None:
                inside &= created < end.timestamp()
            rows = np.flatnonzero(inside)
            newest = rows[np.argsort(-created[rows], kind="stable")[:limit]]
            return {int(k) for k in vectors.keys[newest]}

    def similarities(self, user_id: str, keys: Iterable[int], vector: Vector) -> dict[int, float]:
        """Cosine of some items (by key) with `vector`."""
        with self._lock:
            index = self._users.get(user_id)
            return index.vectors.similarities(keys, vector) if index else {}

    def close(self) -> None:
        """Free the in-memory database."""
        with self._lock:
            self._users.clear()
            self._conn.close()
