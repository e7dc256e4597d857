"""The scaled topology on loopback: nginx in front of two `companion serve` processes on one
PostgreSQL and one Redis, generating on two llama-server processes and one companion `/v1` (the
OpenAI protocol; the tiny model). Any instance
serves any session; a session's turns stay on one model server (its prompt cache is reused);
killing a model server moves its sessions, its running reply ends with an error event and
nothing is left pending; a reply cut with its instance is answered 503 by nginx, never 502; all
servers down is 503 model_unavailable with Retry-After."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from companion.bench.topology import Topology, llama_server_path, start_topology
from companion.llm.registry import tiny_package_path
from tests.servers import Postgres, Redis, stream_cut

pytestmark = pytest.mark.timeout(900)
MAX_TOKENS = 12
TIMEOUT_S = 20  # request_timeout_s: a turn pending longer (+ 10 s) has lost its instance


@pytest.fixture(scope="module")
def topo(pg_server: Postgres, redis_server: Redis) -> Iterator[tuple[Topology, str]]:
    if llama_server_path() is None:
        pytest.fail("no llama-server: run scripts/build-llama-server.sh (make test does)")
    model = tiny_package_path()
    assert model is not None
    db = pg_server.fresh()
    env = {"COMPANION_MAX_TOKENS": str(MAX_TOKENS), "COMPANION_MEMORY_ENABLED": "false",
           "COMPANION_ENABLE_CACHING": "false", "COMPANION_RATE_LIMIT_PER_MINUTE": "1000",
           "COMPANION_TEMPERATURE": "0", "COMPANION_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
           "COMPANION_HISTORY_MESSAGES": "4", "COMPANION_HISTORY_STEP": "4"}  # fmt: skip
    topology = start_topology(
        model, db, redis_server.url, apps=2, models=2, slots=2, companions=1, env=env
    )
    try:
        yield topology, db
    finally:
        topology.stop()


def chat(url: str, user: str, message: str, session: str | None = None) -> httpx.Response:
    body: dict[str, object] = {"user_id": user, "message": message}
    if session is not None:
        body["session_id"] = session
    return httpx.post(f"{url}/api/v1/chat", json=body, timeout=120)


def chat_body(url: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/chat", json=body, timeout=120)


def server_of(reply: httpx.Response) -> str:
    route = reply.json()["route"]
    assert route is not None and "server" in route, reply.text
    return str(route["server"])


def test_any_instance_serves_any_session_and_turns_stay_on_one_server(
    topo: tuple[Topology, str],
) -> None:
    topology, _ = topo
    a, b = (app.url for app in topology.apps)
    first = chat(topology.url, "any-1", "Hi! I like sailing and old maps.")
    assert first.status_code == 200, first.text
    session = first.json()["session_id"]
    home = server_of(first)
    # opening the session (prefill) through the other instance goes to the same server
    opened = httpx.post(
        f"{b}/api/v1/sessions/{session}/open", json={"user_id": "any-1"}, timeout=60
    )
    assert opened.status_code == 200, opened.text
    replies = [chat(url, "any-1", f"Tell me more, part {i}.", session)
               for i, url in enumerate((a, b, topology.url, b))]  # fmt: skip
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert {server_of(r) for r in replies} == {home}
    # the server kept the session's prefix: later turns reuse the earlier turns' tokens
    assert all(r.json()["timings"]["reused_tokens"] > 0 for r in replies)
    messages = httpx.get(f"{a}/api/v1/sessions/{session}/messages", timeout=30).json()
    assert len(messages["messages"]) == 10
    assert {s["url"] for s in health_servers(topology)} == {m.base_url for m in topology.models}


def test_a_session_on_the_companion_v1_model_server_reuses_its_cache_from_any_instance(
    topo: tuple[Topology, str],
) -> None:
    topology, _ = topo
    a, b = (app.url for app in topology.apps)
    openai = next(m.base_url for m in topology.models if m.api_path)
    for i in range(20):  # new sessions until one lands there (1 in 3)
        first = chat(a, f"v1-{i}", "Hi! I like sailing and old maps.")
        assert first.status_code == 200, first.text
        if server_of(first) == openai:
            break
    else:
        pytest.fail("no session was placed on the companion /v1 model server")
    session = first.json()["session_id"]
    second = chat(b, f"v1-{i}", "Tell me more.", session)
    assert second.status_code == 200, second.text
    assert server_of(second) == openai
    assert second.json()["timings"]["reused_tokens"] > 0


def test_late_turns_start_with_the_last_prompt_whichever_instance_builds_them(
    topo: tuple[Topology, str],
) -> None:
    # history 4 messages, moved on 4 at a time: the window moves at turns 5 and 7; the summary
    # of what left it is a notes block from turn 5 on, put back in place by the other instance
    topology, _ = topo
    a, b = (app.url for app in topology.apps)
    lines = ["I work as a nurse in a big hospital.", "My sister lives in Osaka with two cats.",
             "I am planning a trip to Japan in spring.", "I love hiking and old temples.",
             "What should I pack for the mountains?", "Will it rain a lot in April?",
             "What food should I try in Osaka?", "Thanks, that helps a lot."]  # fmt: skip
    first = chat(a, "late-1", lines[0])
    assert first.status_code == 200, first.text
    session, before = first.json()["session_id"], first.json()["usage"]["prompt_tokens"]
    for turn, line in enumerate(lines[1:], start=2):
        r = chat((a, b)[turn % 2], "late-1", line, session)
        assert r.status_code == 200, r.text
        reused, prompt = r.json()["timings"]["reused_tokens"], r.json()["usage"]["prompt_tokens"]
        if turn not in (5, 7):  # the last turn's whole prompt (and its reply) is reused
            assert reused >= before - 2, (turn, reused, before, prompt)
        before = prompt


def test_sse_streams_through_the_balancer_token_by_token(topo: tuple[Topology, str]) -> None:
    topology, _ = topo
    arrivals: list[float] = []
    body = {"user_id": "sse-1", "message": "Count from one to ten.", "stream": True}
    with httpx.stream("POST", f"{topology.url}/api/v1/chat", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                arrivals.append(time.perf_counter())
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] > 0.01  # not one buffered burst at the end


def test_a_killed_instance_loses_no_session_and_its_turn_is_not_left_pending(
    topo: tuple[Topology, str],
) -> None:
    topology, db = topo
    first = chat(topology.url, "crash-1", "Hello! Do you like the sea?")
    assert first.status_code == 200, first.text
    session = first.json()["session_id"]
    victim = topology.apps[1]
    body = {"user_id": "crash-1", "session_id": session, "stream": True, "max_tokens": 400,
            "temperature": 0,
            "message": "Write a very long story about the sea, with many chapters."}  # fmt: skip
    story = {"max_tokens": 150, "message": "Write a very long story about the sea, please."}

    def cut_in_flight() -> list[httpx.Response]:
        """Replies in flight through nginx when the instance dies (round robin: half are on
        it): sent once the victim's own stream runs (it holds its model slot), killed 1 s into
        them, before any can end (killing at the stream's first token instead raced them: the
        stream waited for a model slot until stories had ended)."""
        with ThreadPoolExecutor(4) as pool:
            inflight = [pool.submit(chat_body, topology.url, {**story, "user_id": f"crash-n{i}"})
                        for i in range(4)]  # fmt: skip
            time.sleep(1)
            victim.kill()
            return [f.result() for f in inflight]

    answers: list[httpx.Response] = []
    with pytest.raises(httpx.HTTPError):  # the stream is cut with the instance
        stream_cut(victim.url, body, lambda: answers.extend(cut_in_flight()))
    # nginx answers those that died with the instance 503 + Retry-After in the app's shape,
    # never its own 502; the others complete, or are refused at once when the servers are
    # full (429 overloaded), or on a loaded machine time out in the app
    seen = [(r.status_code, r.text) for r in answers]
    assert 503 in {r.status_code for r in answers}, seen
    for r in answers:
        assert r.status_code in (200, 429, 503, 504), seen
        if r.status_code in (429, 503):
            code = "overloaded" if r.status_code == 429 else "instance_unavailable"
            assert r.json()["error"]["code"] == code, r.text
            assert int(r.headers["retry-after"]) >= 1
        if r.status_code == 504:  # the app's own deadline, not nginx's
            assert r.json()["error"]["code"] == "deadline_exceeded", r.text
    # new requests go to the instance left (the dead one's port refuses: nginx passes them on)
    for i in range(4):
        r = chat(topology.url, f"crash-after-{i}", "Hello again!")
        assert r.status_code == 200, r.text
    # nginx passes the session's next turns to the instance left, once the dead instance's
    # session lock has expired (10 s; it waits for it, or gets 409 session_busy)
    deadline = time.monotonic() + 60
    while (r := chat(topology.url, "crash-1", "Are you still there?", session)).status_code != 200:
        assert r.status_code == 409 and r.json()["error"]["code"] == "session_busy", r.text
        assert time.monotonic() < deadline
        time.sleep(float(r.headers.get("retry-after", 1)))
    r = chat(topology.url, "crash-1", "Good. Tell me about ships.", session)
    assert r.status_code == 200, r.text
    # the cut turn is marked interrupted once it is older than request_timeout_s (+ margin)
    deadline = time.monotonic() + TIMEOUT_S + 40
    while pending_and_failed(db)[0]:
        assert time.monotonic() < deadline, "a turn of the killed instance is still pending"
        time.sleep(1)
    victim.start()  # back for the next test


def pending_and_failed(db: str) -> tuple[int, int]:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(sa.text(
                "SELECT status, count(*) FROM messages GROUP BY status")).all())  # fmt: skip
    finally:
        engine.dispose()
    return int(rows.get("pending", 0)), int(rows.get("failed", 0))


def test_a_killed_model_server_moves_its_sessions_and_leaves_nothing_pending(
    topo: tuple[Topology, str],
) -> None:
    topology, db = topo
    homes: list[tuple[str, str, str]] = []  # (user, session, model server)
    for i in range(6):
        r = chat(topology.url, f"fail-{i}", "Hello, how are you today?")
        assert r.status_code == 200, r.text
        homes.append((f"fail-{i}", r.json()["session_id"], server_of(r)))
    user, session, victim_url = homes[0]
    victim = next(m for m in topology.models if m.base_url == victim_url)
    # a long reply running on the victim when it dies (at its first token)
    body = {"user_id": user, "session_id": session, "stream": True, "max_tokens": 400,
            "temperature": 0,
            "message": "Write a very long story about the sea, with many chapters."}  # fmt: skip
    out = stream_cut(topology.url, body, victim.kill)
    assert out["status"] == 200
    assert out["events"][-1] == "error", out
    assert out["error"]["code"] == "model_unavailable", out
    assert out["ended_at"] - out["cut_at"] < 3
    # every session goes on; the victim's on the other server
    for user, session, _ in homes:
        r = chat(topology.url, user, "And what about tomorrow?", session)
        assert r.status_code == 200, r.text
        assert server_of(r) != victim_url
    pending, failed = pending_and_failed(db)
    assert pending == 0 and failed >= 1  # the cut exchange is marked failed
    # it rejoins once its probe answers again
    victim.start()
    deadline = time.monotonic() + 10
    while victim_url not in {s["url"] for s in health_servers(topology) if s["status"] == "ok"}:
        assert time.monotonic() < deadline, health_servers(topology)
        time.sleep(0.2)
    # every server down: 503 model_unavailable at once, with Retry-After
    for model in topology.models:
        model.kill()
    time.sleep(2)
    r = chat(topology.url, "fail-1", "Anyone there?")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable", r.text
    assert int(r.headers["retry-after"]) >= 1
    assert pending_and_failed(db)[0] == 0


def health_servers(topology: Topology) -> list[dict[str, object]]:
    health = httpx.get(f"{topology.apps[0].url}/api/v1/health", timeout=30).json()
    return list(health["checks"]["model"]["servers"])
