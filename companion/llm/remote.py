"""The Engine interface over remote model servers: llama.cpp's `llama-server`, or any server of
OpenAI's `/v1/completions` that takes token-id prompts (vLLM, another companion's `/v1`).

With `model_servers` set, an instance loads no model weights: only the GGUF's vocabulary
(vocab_only, a few MB) for the chat template and the tokenizer, so prompts are rendered and
tokenized here exactly as the local engine does (message contents never parse as special
tokens), and the token ids go to the server: llama-server's `/completion` with `cache_prompt`
(and `id_slot` with pin_slots), or `{base}/completions` with the session as
`prompt_cache_key` (servers.py says which protocol a server speaks). The whole prompt is sent
every turn, so a server that holds the session's earlier turns reuses them and one that does not
only prefills more: a move to another server is slower, never wrong.

An OpenAI server gets temperature, top_p, max_tokens, seed, stop, presence and frequency
penalties and logit_bias; not top_k, repeat_penalty nor a grammar (OpenAI's API has none of
them, and companion's /v1 refuses unknown parameters): a request that needs a grammar (tools,
a JSON response_format) is refused (422 invalid_input) there. Its timings are measured here
(time to first token, generation time); its reused prompt tokens are the usage's
`prompt_tokens_details.cached_tokens` where the server reports them (companion and vLLM do).

Admission: a request that would not be served within request_timeout_s on any healthy server
(its predicted wait there plus its reply, servers.py) is refused at once with 429 `overloaded`
and Retry-After, before the turn stores anything (`admit` reserves the chosen server while the
turn runs, so a flood cannot all pass at once); a session whose server cannot take it in time
moves to one that can. A server's own 429 is passed on as 429. A request admitted but still
queued at its server (no token yet) is judged again every WATCH_S as the server's hold time
moves: once it could no longer end within its deadline (servers.py, late_queued) it is refused
then with 429 `overloaded` and Retry-After (its exchange marked failed, nothing half-written) and
taken off the server's queue, instead of ending 504 `deadline_exceeded` later.

A server found down before the first token is skipped and the request goes to the next one; a
server lost mid-reply (connection cut, or its probe failing) ends the reply with ModelDown, so
the exchange is marked failed, never left pending. Closing the stream (the client left) closes
the HTTP request, and the server stops generating (llama-server, vLLM and companion do).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from companion.errors import (
    CompanionError,
    ConfigError,
    GenerationError,
    InputError,
    ModelDown,
    Overloaded,
)
from companion.llm.admission import retry_after
from companion.llm.base import GenerationDone, GenerationRequest, ModelInfo
from companion.llm.llama_cpp import _formatters
from companion.llm.placement import Placement, score
from companion.llm.prompt import SpecialTokens, render_prompt
from companion.llm.registry import check_gguf, spec_from_file
from companion.llm.servers import ServerPool

log = logging.getLogger("companion.llm.remote")
WATCH_S = 0.25  # how often a waiting stream checks that its server is still up
RETRY_AFTER_S = 2


class ServersDown(ModelDown):
    """Every model server is down: 503 model_unavailable with Retry-After."""

    retry_after_s = RETRY_AFTER_S


class ServerLost(ModelDown):
    """The server of a running reply went away; the next turn goes to another (a reply not
    yet sent, non-streamed: 503 model_unavailable with Retry-After)."""

    retry_after_s = RETRY_AFTER_S


_FINISH = {"eos": "stop", "word": "stop", "limit": "length"}
_USER = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")  # what companion's /v1 takes as `user`


@dataclass
class Last:
    """The end of a server's reply, in the figures both protocols can give."""

    finish: str  # stop | length
    generated: int | None = None  # completion tokens (None: count the pieces)
    cached: int = 0  # prompt tokens the server reused from its cache
    generation_ms: float | None = None  # None: measured here
    tokens_per_second: float | None = None
    prompt_ms: float | None = None


def llama_body(request: GenerationRequest, n_predict: int, slot: int | None) -> dict[str, Any]:
    """llama-server's /completion request for `request`'s tokens and sampling settings."""
    o = request.options
    body: dict[str, Any] = {
        "prompt": request.prompt_tokens, "n_predict": n_predict, "stream": True,
        "cache_prompt": True, "temperature": o.temperature, "top_p": o.top_p, "top_k": o.top_k,
        "repeat_penalty": o.repeat_penalty, "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty, "stop": list(o.stop),
        "logit_bias": [[t, b] for t, b in o.logit_bias], "return_tokens": False,
    }  # fmt: skip
    if o.seed is not None:
        body["seed"] = o.seed
    if request.grammar:
        body["grammar"] = request.grammar
    if slot is not None:
        body["id_slot"] = slot
    return body


def cache_key(session_key: str) -> str:
    """A session's `prompt_cache_key` (at most 200 characters, as companion's /v1 takes)."""
    if len(session_key) <= 200:
        return session_key
    return "h-" + hashlib.blake2b(session_key.encode(), digest_size=16).hexdigest()


def openai_body(request: GenerationRequest, max_tokens: int, model: str) -> dict[str, Any]:
    """OpenAI's /v1/completions request: the prompt as token ids, streamed with usage."""
    if request.grammar:
        raise InputError(
            "grammar-constrained output (tools, a JSON response_format) is not available on an "
            "OpenAI-protocol model server", field="model_servers",
        )  # fmt: skip
    o = request.options
    body: dict[str, Any] = {
        "model": model or "companion", "prompt": request.prompt_tokens, "max_tokens": max_tokens,
        "stream": True, "stream_options": {"include_usage": True},
        "temperature": o.temperature, "top_p": o.top_p, "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty,
    }  # fmt: skip
    if len(o.stop) > 4:
        raise InputError("stop: at most 4 sequences on an OpenAI-protocol model server",
                         field="stop")  # fmt: skip
    if o.stop:
        body["stop"] = list(o.stop)
    if o.seed is not None:
        body["seed"] = o.seed
    if o.logit_bias:
        body["logit_bias"] = {str(t): b for t, b in o.logit_bias}
    if request.session_key:
        body["prompt_cache_key"] = cache_key(request.session_key)
    if request.user and _USER.match(request.user):
        body["user"] = request.user  # the server's per-user limits see the end user
    return body


def llama_events(data: str) -> list[str | Last]:
    """One SSE `data:` of llama-server's /completion: a text piece, or the last event."""
    event = json.loads(data)
    if event.get("stop"):
        t = event.get("timings") or {}
        return [Last(
            _FINISH.get(str(event.get("stop_type", "eos")), "stop"),
            int(t.get("predicted_n", event.get("tokens_predicted", 0)) or 0),
            int(t.get("cache_n", event.get("tokens_cached", 0)) or 0),
            float(t.get("predicted_ms", 0.0) or 0.0),
            float(t.get("predicted_per_second", 0.0) or 0.0),
            float(t.get("prompt_ms", 0.0) or 0.0),
        )]  # fmt: skip
    text = event.get("content") or ""
    return [text] if text else []


class OpenAIEvents:
    """The SSE `data:` lines of OpenAI's streamed /v1/completions: text pieces, then (at
    `[DONE]`) the Last with the finish_reason and usage the chunks before it carried."""

    def __init__(self) -> None:
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}

    def __call__(self, data: str) -> list[str | Last]:
        if data.strip() == "[DONE]":
            details = self.usage.get("prompt_tokens_details") or {}
            generated = self.usage.get("completion_tokens")
            return [Last(
                "length" if self.finish == "length" else "stop",
                None if generated is None else int(generated),
                int(details.get("cached_tokens") or 0),
            )]  # fmt: skip
        event = json.loads(data)
        if "error" in event:  # an error sent mid-stream (companion's /v1, vLLM)
            error = event["error"] if isinstance(event["error"], dict) else {}
            raise _StreamError(str(error.get("message") or event["error"]))
        if event.get("usage"):
            self.usage = event["usage"]
        out: list[str | Last] = []
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if choice.get("text"):
                out.append(str(choice["text"]))
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        return out


class RemoteEngine:
    """Generation on model servers, placed per session (see placement.py)."""

    def __init__(
        self,
        path: Path,
        size: str,
        pool: ServerPool,
        placement: Placement,
        *,
        context_length: int,
        request_timeout_s: float = 300.0,
        pin_slots: bool = False,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        path = check_gguf(path)
        limit = spec_from_file(path).context_limit
        if context_length > limit:
            raise ConfigError(
                f"context_length {context_length} exceeds the model's limit {limit} ({path.name})",
                field="context_length",
            )
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        started = time.perf_counter()
        self._model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        self._formatter, self._prefix_formatter = _formatters(self._model)
        self._specials = SpecialTokens(self._model)
        self._lock = threading.Lock()  # the vocab is not safe to share between threads
        self.pool = pool
        self.placement = placement
        self.pin_slots = pin_slots
        self.timeout_s = request_timeout_s  # a request predicted to end later is refused
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout_s, connect=1.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        self._info = ModelInfo(
            name=path.stem, size=size, path=str(path), context_length=context_length,
            context_limit=limit, n_gpu_layers=0,
            load_time_s=round(time.perf_counter() - started, 4), rss_added_mb=0.0,
            file_size_mb=round(path.stat().st_size / 2**20, 1),
        )  # fmt: skip
        self._figures = {"requests": 0.0, "errors": 0.0, "retries": 0.0, "refused_queued": 0.0,
                         "prompt_tokens": 0.0, "cached_tokens": 0.0}  # fmt: skip
        self._closed = False

    # --- the prompt side: local, from the same GGUF -------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def vocab(self) -> Any:
        return self._model.vocab

    def render_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        formatter = self._formatter if add_generation_prompt else self._prefix_formatter
        with self._lock:
            return render_prompt(formatter, messages, self._specials)

    def tokenize(self, text: str) -> list[int]:
        with self._lock:
            return self._specials.tokenize(text)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._model.tokenize(text.encode("utf-8"), False, False))

    # --- serving state ---------------------------------------------------------------------

    @property
    def down_reason(self) -> str | None:
        if self._closed:
            return "it was closed"
        if self.pool.healthy():
            return None
        reasons = "; ".join(f"{s['url']}: {s['reason']}" for s in self.pool.stats())
        return f"no model server is healthy ({reasons})"

    def check_serving(self) -> None:
        """ServersDown (503) when no server is up; Overloaded (429) when none can serve a new
        request within request_timeout_s (before the turn makes anything)."""
        reason = self.down_reason
        if reason is not None:
            raise ServersDown(f"the model is unavailable: {reason}; retry shortly")
        self._in_time(self.pool.healthy())

    def _in_time(self, healthy: list[str], budget_s: float | None = None) -> list[str]:
        """The servers of `healthy` that can serve a new request in time (within `budget_s`,
        request_timeout_s by default); Overloaded if none."""
        budget = self.timeout_s if budget_s is None else budget_s
        late = {url: self.pool.late_by(url, budget) for url in healthy}
        fit = [url for url in healthy if late[url] <= 0]
        if healthy and not fit:
            wait = retry_after(min(late.values()))
            raise Overloaded(
                f"every model server is busy: a new request would not be answered within "
                f"request_timeout_s ({self.timeout_s:g} s); retry in {wait} s",
                retry_after_s=wait,
            )
        return fit

    def stats(self) -> dict[str, float]:
        servers = self.pool.stats()
        return {**self._figures, "model_servers": float(len(servers)),
                "model_servers_up": float(sum(s["status"] == "ok" for s in servers)),
                "session_moves": float(self.placement.moves)}  # fmt: skip

    def servers(self) -> list[dict[str, Any]]:
        return self.pool.stats()

    def close(self) -> None:
        self._closed = True
        self.pool.close()
        self._model.close()

    # --- generation --------------------------------------------------------------------------

    def _place(self, session: str | None, admit: bool = True, budget_s: float | None = None) -> str:
        """The server for a request of `session`: among the healthy ones that can serve it in
        time (within `budget_s`: what is left of a retried request's deadline; any healthy one
        when not `admit`: a prefill)."""
        healthy = self.pool.healthy()
        if not healthy or self._closed:
            self.check_serving()
        if admit:
            healthy = self._in_time(healthy, budget_s)
        return self.placement.place(session, healthy, self.pool.load)

    @staticmethod
    def _session(request: GenerationRequest) -> str | None:
        return request.route_key or (request.session_key or "").split("#")[0] or None

    @contextmanager
    def admit(self, request: GenerationRequest) -> Iterator[None]:
        """Choose the server now (Overloaded or ServersDown if none can serve `request` in
        time) and count it there until the block ends; generate() starts there."""
        url = self._place(self._session(request))
        self.pool.begin(url)
        request.server = url
        try:
            yield
        finally:
            request.server = None
            self.pool.end(url)

    def _slot(self, url: str, session: str | None) -> int | None:
        """A fixed slot per session when pin_slots is on and the server reports its slots."""
        slots = self.pool.servers[url].slots
        if not self.pin_slots or not slots or session is None:
            return None
        return score(session, "slot") % slots

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str | GenerationDone]:
        """Stream text pieces, then one GenerationDone; closing the stream cancels the run."""
        if request.logprobs is not None:
            raise InputError("logprobs are not available with model_servers", field="logprobs")
        if not request.prompt_tokens:
            raise GenerationError("empty prompt")
        try:
            async for item in self._run(request, request.options.max_tokens):
                yield item
        finally:
            request.cancelled = True

    async def prefill(self, prompt_tokens: list[int], session_key: str) -> GenerationDone:
        """Have the session's server cache the prompt so far (n_predict 0)."""
        from companion.domain import GenerationOptions

        request = GenerationRequest(prompt_tokens, GenerationOptions(max_tokens=0), session_key)
        done = None
        async for item in self._run(request, 0):
            if isinstance(item, GenerationDone):
                done = item
        assert done is not None
        return done

    async def _run(self, request: GenerationRequest, n_predict: int) -> AsyncIterator[Any]:
        """Try servers in placement order until one starts the reply."""
        self._figures["requests"] += 1
        tried: set[str] = set()
        session = self._session(request)
        started = time.monotonic()
        deadline = started + self.timeout_s if n_predict > 0 else None
        while True:
            reserved = request.server if request.server not in tried else None
            if reserved is not None and self.pool.is_up(reserved):
                url = reserved  # admit() chose it and counts it
            else:  # a retry has only what is left of its deadline
                left = self.timeout_s - (time.monotonic() - started) if tried else None
                url = self._place(session, admit=n_predict > 0, budget_s=left)
            if url in tried:  # placement gave back a server that just failed
                raise ServerLost(f"model server {url} failed; retry shortly")
            tried.add(url)
            try:
                async for item in self._stream(url, request, n_predict, deadline):
                    yield item
                return
            except _NotStarted as exc:
                self.pool.mark_down(url, exc.reason)
                self._figures["retries"] += 1
                log.warning("model server %s failed before replying (%s); trying another",
                            url, exc.reason)  # fmt: skip
                continue
            except CompanionError:
                self._figures["errors"] += 1
                raise

    async def _stream(
        self, url: str, request: GenerationRequest, n_predict: int, deadline: float | None = None
    ) -> AsyncIterator[Any]:
        """The reply from `url`; a reply still queued there that can no longer end before
        `deadline` (monotonic) is refused (Overloaded) and taken off the server's queue."""
        if self.pool.api(url) == "openai":
            # max_tokens 0 is no OpenAI request: a prefill generates one token, dropped
            body = openai_body(request, max(n_predict, 1), self.pool.model(url))
            target, parse = f"{url}/completions", OpenAIEvents()
        else:
            slot = self._slot(url, request.route_key or request.session_key)
            body, target, parse = (
                llama_body(request, n_predict, slot),
                f"{url}/completion",
                llama_events,
            )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(self._read(target, body, parse, queue))
        counted = url == request.server  # admit() counts it already
        if not counted:
            self.pool.begin(url)
        ahead = self.pool.ahead(url)
        submitted = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), WATCH_S)
                except TimeoutError:
                    if not self.pool.is_up(url):
                        raise self._lost(url, first is not None, "its probe failed") from None
                    if first is None and deadline is not None:
                        self._still_in_time(url, ahead, submitted, deadline)
                    continue
                if isinstance(item, _Failed):
                    self.pool.mark_down(url, item.reason)
                    raise self._lost(url, first is not None, item.reason)
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Last):
                    if n_predict == 0:
                        pieces = []
                    yield self._done(url, request, item, pieces, submitted, first, n_predict)
                    return
                if item and n_predict > 0:
                    first = first or time.perf_counter()
                    pieces.append(item)
                    yield item
        finally:
            if not counted:
                self.pool.end(url)
            reader.cancel()  # closes the connection: the server stops this generation

    def _still_in_time(
        self, url: str, ahead: tuple[int, float], submitted: float, deadline: float
    ) -> None:
        """Overloaded (429, Retry-After: the seconds it would be late) when a reply still queued
        on `url` since `submitted` (perf_counter) can no longer end before `deadline`."""
        waited = time.perf_counter() - submitted
        late = self.pool.late_queued(url, ahead, waited, deadline - time.monotonic() + waited)
        if late > 0:
            self._figures["refused_queued"] += 1
            raise Overloaded(
                f"model server {url} is busy: this request, queued {waited:.0f} s, would not be "
                f"answered within request_timeout_s ({self.timeout_s:g} s); retry later",
                retry_after_s=retry_after(late),
            )

    def _lost(self, url: str, started: bool, reason: str) -> Exception:
        if not started:
            return _NotStarted(reason)
        return ServerLost(f"model server {url} went away mid-reply ({reason}); resend the message")

    async def _read(
        self, target: str, body: dict[str, Any], parse: Any, queue: asyncio.Queue[Any]
    ) -> None:
        """Put each SSE event's pieces (text, then a Last) on `queue`; a failure as _Failed."""
        try:
            async with self._client.stream("POST", target, json=body) as resp:
                if resp.status_code >= 500:
                    await resp.aread()
                    queue.put_nowait(_Failed(f"answered {resp.status_code}"))
                    return
                if resp.status_code == 429:  # the server's own admission (companion's /v1)
                    await resp.aread()
                    wait = resp.headers.get("retry-after", "")
                    queue.put_nowait(Overloaded(
                        f"model server {target} is overloaded; retry later",
                        retry_after_s=int(wait) if wait.isdigit() else RETRY_AFTER_S,
                    ))  # fmt: skip
                    return
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")[:300]
                    queue.put_nowait(GenerationError(f"model server refused: {text}"))
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    for item in parse(line[5:].strip()):
                        queue.put_nowait(item)
                        if isinstance(item, Last):
                            return
            queue.put_nowait(_Failed("the stream ended without a last event"))
        except _StreamError as exc:
            queue.put_nowait(_Failed(f"error event: {exc}"[:200]))
        except httpx.HTTPError as exc:
            queue.put_nowait(_Failed(f"{type(exc).__name__}: {exc}"[:200]))
        except ValueError as exc:
            queue.put_nowait(GenerationError(f"bad event from the model server: {exc}"))

    def _done(
        self, url: str, request: GenerationRequest, last: Last, pieces: list[str],
        submitted: float, first: float | None, n_predict: int,
    ) -> GenerationDone:  # fmt: skip
        """The closing event from the server's last event; what it does not tell, measured."""
        ended = time.perf_counter()
        generated = last.generated if last.generated is not None else len(pieces)
        gen_ms = last.generation_ms
        if gen_ms is None:
            gen_ms = (ended - (first or submitted)) * 1000  # no piece (a prefill): all of it
        tps = last.tokens_per_second
        if tps is None:
            tps = generated / (gen_ms / 1000) if gen_ms > 0 else 0.0
        ttft_ms = ((first or ended) - submitted) * 1000
        if last.prompt_ms is not None and last.generation_ms is not None:
            held_s = (last.prompt_ms + last.generation_ms) / 1000  # the server's slot time
        else:
            held_s = ended - submitted
        if n_predict > 0:  # a reply's hold time (a prefill's would understate it)
            self.pool.observe(url, held_s)
        self._figures["prompt_tokens"] += len(request.prompt_tokens)
        self._figures["cached_tokens"] += last.cached
        timings = {
            "queue_ms": 0.0,
            "time_to_first_token_ms": round(ttft_ms, 2),
            "generation_ms": round(gen_ms, 2),
            "tokens_per_second": round(tps, 2),
            # an OpenAI server does not tell: its prefill is within the time to first token
            "prompt_ms": round(last.prompt_ms if last.prompt_ms is not None else ttft_ms, 2),
            "reused_tokens": float(last.cached),
        }
        prompt = len(request.prompt_tokens)
        return GenerationDone("".join(pieces), prompt, generated, last.finish, timings, server=url)


class _Failed:
    """The connection to a server failed or broke (the server is then marked down)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _StreamError(Exception):
    """An error event in an OpenAI server's stream."""


class _NotStarted(Exception):
    """The server failed before sending the first token: the request can go elsewhere."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_remote(settings: Any, path: Path, size: str, link: Any = None) -> RemoteEngine:
    """A RemoteEngine over `settings.model_servers`, its session map in Redis when `link` is."""
    from companion.llm.placement import LocalMap, RedisMap

    pool = ServerPool(
        settings.model_servers, probe_s=settings.model_server_probe_s, api=settings.model_server_api
    )
    sessions = RedisMap(link) if link is not None else LocalMap()
    placement = Placement(sessions, settings.model_server_routing, settings.model_server_max_load)
    engine = RemoteEngine(
        path, size, pool, placement, context_length=settings.context_length,
        request_timeout_s=settings.request_timeout_s, pin_slots=settings.model_server_pin_slots,
    )  # fmt: skip
    pool.start()
    log.info("model servers: %s (%s routing); up: %s", ", ".join(pool.servers),
             settings.model_server_routing, ", ".join(pool.healthy()) or "none")  # fmt: skip
    return engine
