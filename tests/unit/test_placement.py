"""Session placement over model servers: rendezvous hashing with a load cap (pure logic)."""

from __future__ import annotations

from collections import Counter

from companion.llm.placement import LocalMap, Placement, choose, ranked

SERVERS = ["http://a:8080", "http://b:8080", "http://c:8080"]


def idle(_server: str) -> int:
    return 0


def test_a_session_stays_on_its_server_turn_after_turn() -> None:
    placement = Placement(LocalMap())
    homes = {placement.place("s7", SERVERS, idle) for _ in range(5)}
    assert len(homes) == 1


def test_sessions_spread_over_the_servers() -> None:
    placement = Placement(LocalMap())
    counts = Counter(placement.place(f"s{i}", SERVERS, idle) for i in range(300))
    assert set(counts) == set(SERVERS) and min(counts.values()) > 60


def test_losing_a_server_moves_only_its_sessions() -> None:
    before = {f"s{i}": ranked(f"s{i}", SERVERS)[0] for i in range(300)}
    survivors = SERVERS[:2]
    after = {s: ranked(s, survivors)[0] for s in before}
    moved = {s for s in before if before[s] != after[s]}
    assert moved == {s for s, home in before.items() if home == SERVERS[2]}


def test_a_moved_session_goes_to_a_healthy_server_and_is_counted() -> None:
    placement = Placement(LocalMap())
    session = next(f"s{i}" for i in range(100) if ranked(f"s{i}", SERVERS)[0] == SERVERS[0])
    assert placement.place(session, SERVERS, idle) == SERVERS[0]
    moved = placement.place(session, SERVERS[1:], idle)
    assert moved in SERVERS[1:] and placement.moves == 1
    # it stays on its new server when the old one comes back (its cache is there now)
    assert placement.place(session, SERVERS, idle) == moved


def test_a_server_over_the_cap_takes_no_new_session() -> None:
    busy = {SERVERS[0]: 8}
    for i in range(50):
        assert choose(f"n{i}", SERVERS, lambda s: busy.get(s, 0), cap=8) != SERVERS[0]
    # all over the cap: the least loaded
    loads = {SERVERS[0]: 9, SERVERS[1]: 12, SERVERS[2]: 10}
    assert choose("x", SERVERS, loads.__getitem__, cap=8) == SERVERS[0]


def test_round_robin_ignores_the_session() -> None:
    placement = Placement(LocalMap(), mode="round_robin")
    got = [placement.place("same", SERVERS[:2], idle) for _ in range(4)]
    assert got == [SERVERS[0], SERVERS[1], SERVERS[0], SERVERS[1]]
