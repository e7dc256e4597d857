"""SequencePool bookkeeping: session reuse, shared prefixes, exact cell counts, LRU eviction."""

from __future__ import annotations

from companion.llm.kvcache import MIN_SHARED_PREFIX, SequencePool

PERSONA = list(range(100, 100 + MIN_SHARED_PREFIX + 4))  # a shared system prefix


def run(pool: SequencePool, key: str, prompt: list[int], generated: int = 0) -> int:
    """Admit, 'decode' the new prompt tokens and `generated` more, release; the sequence id."""
    plan = pool.acquire(key, prompt, generated)
    assert plan is not None
    entry = pool.entries[plan.seq]
    entry.append(prompt[plan.keep :])
    entry.append([7] * generated)
    pool.release(plan.seq)
    return plan.seq


def test_next_turn_keeps_the_common_prefix_of_its_own_session() -> None:
    pool = SequencePool(n_seq=8, kv_tokens=1000)
    turn1 = PERSONA + [1, 2, 3]
    seq = run(pool, "s", turn1, generated=5)
    plan = pool.acquire("s", turn1 + [7] * 5 + [9, 9], 10)
    assert plan is not None and plan.seq == seq and plan.copy_from is None
    assert plan.keep == len(turn1) + 5
    assert pool.counters["hits"] == 1 and pool.counters["reused_tokens"] == plan.keep
    assert pool.acquire("s", turn1, 1) is None  # the session is busy until released


def test_new_session_copies_the_shared_prefix_and_pins_it() -> None:
    pool = SequencePool(n_seq=8, kv_tokens=1000)
    first = run(pool, "a", PERSONA + [1, 2, 3])
    plan = pool.acquire("b", PERSONA + [4, 5], 4)
    assert plan is not None and plan.copy_from == first and plan.keep == len(PERSONA)
    assert plan.pin is not None and pool.entries[plan.pin].key is None
    # shared cells are counted once: persona + a's 3 tokens
    assert pool.used_cells() == len(PERSONA) + 3
    pool.entries[plan.seq].append([4, 5])
    assert pool.used_cells() == len(PERSONA) + 5
    assert pool.counters["prefix_shares"] == 1 and pool.counters["misses"] == 2


def test_whole_prompt_cached_still_decodes_its_last_token() -> None:
    pool = SequencePool(n_seq=4, kv_tokens=1000)
    prompt = PERSONA + [1, 2]
    run(pool, "s", prompt)
    plan = pool.acquire("s", prompt, 1)
    assert plan is not None and plan.keep == len(prompt) - 1


def test_least_recently_used_idle_session_is_evicted_for_room() -> None:
    pool = SequencePool(n_seq=8, kv_tokens=100)
    old = run(pool, "old", [1] * 40)
    run(pool, "new", [2] * 40)
    plan = pool.acquire("third", [3] * 20, 20)  # 40 + 40 + 40 > 100: one must go
    assert plan is not None and plan.evicted == (old,)
    assert pool.counters["evictions"] == 1
    assert "old" not in {e.key for e in pool.entries.values()}


def test_running_requests_reserve_their_cells() -> None:
    pool = SequencePool(n_seq=8, kv_tokens=100)
    assert pool.acquire("a", [1] * 10, 60) is not None  # may still grow to 70 cells
    assert pool.acquire("b", [2] * 10, 30) is None  # 70 + 40 > 100, nothing idle to evict
    assert pool.acquire("c", [3] * 10, 20) is not None


def test_split_streams_need_an_id_and_a_fit_and_keep_a_copy_source_until_it_is_done() -> None:
    """One KV stream per sequence: cells are not shared, a prompt must fit its own stream, no
    prefix is pinned, and a copy's source is not evicted before the next decode copies it."""
    pool = SequencePool(n_seq=3, kv_tokens=3 * 64, stream_cells=64)
    assert pool.acquire("big", list(range(60)), 8) is None  # 68 cells > one stream of 64
    first = run(pool, "a", PERSONA + [1, 2, 3])
    assert first == 0  # low ids first: decoding sequences stay consecutive
    plan = pool.acquire("b", PERSONA + [4, 5], 4)
    assert plan is not None and plan.copy_from == first and plan.keep == len(PERSONA)
    assert plan.pin is None and plan.seq == 1
    assert pool.used_cells() == 2 * len(PERSONA) + 3  # each stream holds its own copy
    # a's stream is the copy's source: with every other id taken it is not evicted for c ...
    busy = pool.acquire("c", [1] * 20, 4)
    assert busy is not None and busy.seq == 2
    assert pool.acquire("d", [2] * 20, 4) is None
    pool.copied()  # ... until a decode has copied it
    later = pool.acquire("d", [2] * 20, 4)
    assert later is not None and later.evicted == (first,) and later.seq == first
