"""The model servers an instance sends generation to, and which of them are healthy.

Each server speaks one of two protocols (`model_server_api`): llama.cpp's `llama-server`
(`/completion`, probed on `/health`) or OpenAI's (`{base}/completions` with token-id prompts:
vLLM, or another companion's `/v1`; probed on `{base}/models`). With `auto`, a base URL ending
in `/v1` is an OpenAI server and any other a llama-server.

A thread probes each server every `probe_s` with a `probe_timeout_s` limit; a failed probe
(refused, timed out, not 200) or a failed request marks the server down at once, so a dead or
hung server is noticed within probe_s + probe_timeout_s (under 2 s by default). A server that
answers its probe again rejoins.

Admission (admission.py's prediction, per server): each server's recent hold time (a reply's
time in a slot: llama-server's prompt plus generation time; an OpenAI server's whole request
time, as measured here) and the requests ahead of a newcomer there. Those are this instance's
own in flight, or, for a llama-server started with `--metrics`, what the server itself reports
(`requests_processing` + `requests_deferred`, every instance's) at its last probe plus what
this instance sent or finished since. A server whose slots are not known (an OpenAI server) is
never predicted late: it does its own admission (companion's /v1 answers 429). Before its
first reply a server's hold time is not known: it takes one round of requests beyond its slots
(2 x slots at once), and the next is refused with Retry-After 1 s until a reply has ended.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from companion.llm.admission import WaitPredictor, late_by, late_in_queue

log = logging.getLogger("companion.llm.servers")


API_MODES = ("auto", "llama", "openai")
COLD_LATE_S = 1.0  # a server with no reply seen yet and a full round queued: retry after 1 s


def server_base(url: str, api: str = "auto") -> tuple[str, str]:
    """(base URL, protocol) of a configured server: `llama` or `openai`.

    auto: a URL ending in /v1 is an OpenAI base URL, any other a llama-server root. llama: a
    trailing /v1 is dropped (llama-server's own API is at its root). openai: the URL is the
    OpenAI base URL as given (requests go to {base}/completions, as OpenAI's clients send them).
    """
    url = url.rstrip("/")
    if api not in API_MODES:
        raise ValueError(f"model_server_api: {api!r} is not one of {', '.join(API_MODES)}")
    if api == "auto":
        api = "openai" if url.endswith("/v1") else "llama"
    if api == "llama" and url.endswith("/v1"):
        url = url[:-3]
    return url, api


def busy_from_metrics(text: str) -> int | None:
    """requests_processing + requests_deferred from llama-server's Prometheus text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
            try:
                found[name] = float(value.split()[0])
            except (ValueError, IndexError):
                return None
    if len(found) < 2:
        return None
    return int(sum(found.values()))


@dataclass
class ModelServer:
    """One model server: whether it is up, and what this instance sent it."""

    url: str
    api: str = "llama"  # llama: llama-server's /completion; openai: {url}/completions
    up: bool = False
    reason: str = "not probed yet"
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    slots: int = 0  # parallel slots it reports (llama-server /props), 0 = unknown
    model: str = ""  # the model it serves, as it reports it (an OpenAI server: the id to send)
    since: float = field(default_factory=time.monotonic)
    hold: WaitPredictor = field(default_factory=WaitPredictor)  # a request's time in a slot
    metrics: bool = True  # ask its /metrics (off once it answers that it has none)
    reported: int | None = None  # requests at the server (all instances') at the last probe
    reported_mine: int = 0  # this instance's in_flight then

    @property
    def busy(self) -> int:
        """Requests at the server now, as best known: the server's last report plus what this
        instance sent or finished since, never fewer than this instance's own."""
        if self.reported is None:
            return self.in_flight
        return max(self.in_flight, self.reported + self.in_flight - self.reported_mine)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "api": self.api, "status": "ok" if self.up else "down",
                "reason": self.reason,
                "in_flight": self.in_flight, "requests": self.requests,
                "failures": self.failures, "slots": self.slots, "model": self.model,
                "busy": self.busy, "hold_s": round(self.hold.hold_s, 3)}  # fmt: skip


class ServerPool:
    """The configured servers and a thread that keeps their health current."""

    def __init__(
        self, urls: list[str], probe_s: float = 0.5, probe_timeout_s: float = 1.0, api: str = "auto"
    ) -> None:
        bases = [server_base(u, api) for u in urls]
        self.servers = {url: ModelServer(url, kind) for url, kind in bases}
        self.probe_s = probe_s
        self.probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=probe_timeout_s)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Probe once now (the first request sees the real state), then every probe_s, one
        thread per server (a hung server's probe does not delay the others')."""
        self.probe_all()
        for url in self.servers:
            thread = threading.Thread(target=self._run, args=(url,), name="companion-probe",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._threads.append(thread)

    def healthy(self) -> list[str]:
        with self._lock:
            return [s.url for s in self.servers.values() if s.up]

    def is_up(self, url: str) -> bool:
        with self._lock:
            return self.servers[url].up

    def load(self, url: str) -> int:
        with self._lock:
            return self.servers[url].in_flight

    def begin(self, url: str) -> None:
        with self._lock:
            server = self.servers[url]
            server.in_flight += 1
            server.requests += 1

    def end(self, url: str) -> None:
        with self._lock:
            self.servers[url].in_flight -= 1

    def observe(self, url: str, hold_s: float) -> None:
        """A reply held one of the server's slots `hold_s` seconds."""
        self.servers[url].hold.observe(hold_s)

    def late_by(self, url: str, timeout_s: float | None) -> float:
        """Seconds by which a new request on `url` would miss `timeout_s` (0 or less: in time);
        0 for a server whose slots are not known."""
        with self._lock:
            server = self.servers[url]
            slots, busy = server.slots, server.busy
        if not slots:
            return 0.0
        if not server.hold.known:  # no reply seen here yet: at most one round queued
            return COLD_LATE_S if timeout_s is not None and busy >= 2 * slots else 0.0
        return late_by(server.hold, busy + 1 - slots, slots, timeout_s)

    def ahead(self, url: str) -> tuple[int, float]:
        """Requests before one just sent to `url` (counted) that must end before it starts, and
        the hold time then."""
        with self._lock:
            server = self.servers[url]
            ahead = max(0, server.busy - server.slots) if server.slots else 0
        return ahead, server.hold.hold_s

    def late_queued(
        self, url: str, sent: tuple[int, float], waited_s: float, timeout_s: float
    ) -> float:
        """Seconds by which a request queued on `url` for `waited_s` (`sent`: what ahead() said
        then) would now miss `timeout_s` (late_in_queue); 0 where slots or hold are unknown."""
        server = self.servers[url]
        if not server.slots:
            return 0.0
        return late_in_queue(server.hold, sent[0], server.slots, sent[1], waited_s, timeout_s)

    def mark_down(self, url: str, reason: str) -> None:
        """A request or probe failed: take the server out until a probe succeeds."""
        with self._lock:
            server = self.servers[url]
            server.failures += 1
            was_up, server.up, server.reason = server.up, False, reason
            if was_up:
                server.since = time.monotonic()
        if was_up:
            log.warning("model server %s is down: %s", url, reason)

    def _mark_up(self, url: str, props: dict[str, Any]) -> None:
        with self._lock:
            server = self.servers[url]
            was_up, server.up, server.reason = server.up, True, "ok"
            server.slots = int(props.get("total_slots") or server.slots or 0)
            server.model = str(props.get("model_path") or props.get("id") or server.model)
            if not was_up:
                server.since = time.monotonic()
        if not was_up:
            log.info("model server %s is up (%d slots)", url, server.slots)

    def api(self, url: str) -> str:
        return self.servers[url].api

    def model(self, url: str) -> str:
        with self._lock:
            return self.servers[url].model

    def probe(self, url: str) -> None:
        """llama-server: GET /health (200 = up); /props once after it comes up, for its slots
        and model. An OpenAI server: GET {base}/models (200 = up), the first model's id."""
        if self.servers[url].api == "openai":
            self._probe_openai(url)
            return
        try:
            resp = self._client.get(f"{url}/health")
        except httpx.HTTPError as exc:
            self.mark_down(url, f"probe failed: {type(exc).__name__}")
            return
        if resp.status_code != 200:
            self.mark_down(url, f"probe answered {resp.status_code}")
            return
        self._read_metrics(url)
        props: dict[str, Any] = {}
        if not self.is_up(url):
            try:
                got = self._client.get(f"{url}/props")
                props = got.json() if got.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                props = {}
        self._mark_up(url, props)

    def _read_metrics(self, url: str) -> None:
        """The requests at a llama-server (every instance's), from its /metrics when it was
        started with --metrics; a failure here is no reason to mark it down."""
        server = self.servers[url]
        if not server.metrics:
            return
        try:
            resp = self._client.get(f"{url}/metrics")
        except httpx.HTTPError:  # slow to answer under load: the last report stands
            return
        reported = busy_from_metrics(resp.text) if resp.status_code == 200 else None
        if resp.status_code in (404, 501):  # not started with --metrics
            server.metrics = False
        with self._lock:
            server.reported, server.reported_mine = reported, server.in_flight

    def _probe_openai(self, url: str) -> None:
        try:
            resp = self._client.get(f"{url}/models")
            models = resp.json().get("data") if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            self.mark_down(url, f"probe failed: {type(exc).__name__}")
            return
        if resp.status_code != 200:
            self.mark_down(url, f"probe answered {resp.status_code}")
            return
        if not models or not isinstance(models, list) or not isinstance(models[0], dict):
            self.mark_down(url, "probe: GET /models lists no model")
            return
        self._mark_up(url, {"id": models[0].get("id")})

    def probe_all(self) -> None:
        for url in list(self.servers):
            self.probe(url)

    def _run(self, url: str) -> None:
        while not self._stop.wait(self.probe_s):
            try:
                self.probe(url)
            except Exception:  # never let the prober die
                log.exception("probing model servers failed")

    def stats(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.to_dict() for s in self.servers.values()]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._client.close()
