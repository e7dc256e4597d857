"""Session placement over model servers: rendezvous hashing with load caps (pure logic)."""

from __future__ import annotations

from collections import Counter

from companion.llm.placement import ACTIVE_S, LocalMap, Placement, choose, ranked

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


def test_new_sessions_are_balanced_over_the_servers_by_active_sessions() -> None:
    # rendezvous alone puts 5 or more of 8 sessions on one of two servers 3 times in 4
    for start in range(0, 200, 8):
        placement = Placement(LocalMap())
        group = range(start, start + 8)
        homes = Counter(placement.place(f"s{i}", SERVERS[:2], idle) for i in group)
        assert sorted(homes.values()) == [4, 4]
    placement = Placement(LocalMap())
    homes = Counter(placement.place(f"t{i}", SERVERS, idle) for i in range(9))
    assert sorted(homes.values()) == [3, 3, 3]


def test_a_session_idle_past_the_window_no_longer_counts() -> None:
    now = [1000.0]
    sessions = LocalMap(clock=lambda: now[0])
    placement = Placement(sessions)
    first = placement.place("old", SERVERS[:1], idle)
    assert sessions.active(SERVERS) == {first: 1, SERVERS[1]: 0, SERVERS[2]: 0}
    now[0] += ACTIVE_S - 1
    placement.place("old", SERVERS, idle)  # a turn keeps it active
    now[0] += ACTIVE_S - 1
    assert sessions.active(SERVERS)[first] == 1
    now[0] += 2
    assert sessions.active(SERVERS)[first] == 0


def test_a_moved_session_counts_only_on_its_new_server() -> None:
    sessions = LocalMap()
    placement = Placement(sessions)
    home = placement.place("m", SERVERS, idle)
    moved = placement.place("m", [s for s in SERVERS if s != home], idle)
    assert sessions.active(SERVERS) == {s: int(s == moved) for s in SERVERS}


def test_the_session_cap_gives_way_to_the_request_cap() -> None:
    # the even-share server is over the request cap: the next one under it, then the least loaded
    active = {SERVERS[0]: 0, SERVERS[1]: 5, SERVERS[2]: 5}
    busy = {SERVERS[0]: 8}
    got = choose("y", SERVERS, lambda s: busy.get(s, 0), cap=8, active=active)
    assert got in SERVERS[1:]
    loads = {SERVERS[0]: 9, SERVERS[1]: 12, SERVERS[2]: 10}
    assert choose("y", SERVERS, loads.__getitem__, cap=8, active=active) == SERVERS[0]
