"""The one place that wires storage, hardware, model choice, engine and chat service together."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from companion.cache import open_cache
from companion.chat import Companion
from companion.config import SIZES, Settings
from companion.embed import load_embedder
from companion.errors import ConfigError, ModelError, ModelNotInstalled
from companion.llm.base import Engine, ModelInfo
from companion.llm.batched import open_engine
from companion.llm.hardware import (
    VRAM_FACTOR,
    Hardware,
    Offload,
    Selection,
    detect_hardware,
    plan_offload,
    select_model,
)
from companion.llm.registry import MODELS, Registry
from companion.llm.remote import open_remote
from companion.llm.routing import ModelRouter, RoutingRule
from companion.personal import open_personal
from companion.reaper import PendingReaper
from companion.shared.bus import Handler
from companion.shared.redis_anchors import RedisAnchors
from companion.shared.wiring import Shared, local_shared, open_shared
from companion.storage import Store, store_for

log = logging.getLogger("companion.runtime")


@dataclass
class ModelPlan:
    """Which model to load and how, with the reasons in words."""

    selection: Selection
    offload: Offload


def plan_model(
    settings: Settings, registry: Registry, hardware: Hardware, size: str | None = None
) -> ModelPlan:
    """Choose the model (override > setting > tier) and its GPU offload."""
    requested = size or settings.model_size
    model_path = None if size else settings.model_path
    selection = select_model(requested, registry, hardware, model_path=model_path)
    offload = plan_offload(
        selection.path.stat().st_size / 2**20,
        selection.spec.n_layers if selection.spec else 32,
        hardware,
        settings.gpu_acceleration,
        settings.n_gpu_layers,
    )
    return ModelPlan(selection, offload)


def main_plan(settings: Settings, registry: Registry, hardware: Hardware) -> ModelPlan:
    """The main model; with model switching on, the large one.

    Switching on: routing_large_size if set; else, with model_size = auto and no model_path,
    the largest installed size that fits in RAM beside the small one (the tier's core count is
    what keeps `auto` small; switching sends only complex messages to the large model).
    """
    if not settings.model_routing:
        return plan_model(settings, registry, hardware)
    if settings.routing_large_size is not None:
        return plan_model(settings, registry, hardware, settings.routing_large_size)
    if settings.model_size != "auto" or settings.model_path is not None:
        return plan_model(settings, registry, hardware)
    installed = registry.installed()
    small = settings.routing_small_size
    small = installed[0] if small in (None, "auto") and installed else small
    if small in MODELS:
        for size in reversed(installed):
            fits = MODELS[size].ram_gb + MODELS[small].ram_gb <= hardware.ram_total_gb
            if fits and SIZES.index(size) > SIZES.index(small):
                plan = plan_model(settings, registry, hardware, size)
                reason = (
                    f"model switching: largest installed that fits in "
                    f"{hardware.ram_total_gb:.1f} GB RAM beside {small}: {size}"
                )
                return replace(plan, selection=replace(plan.selection, reason=reason))
    return plan_model(settings, registry, hardware)


@dataclass
class RoutingPlan:
    """Whether model switching runs, the small model it adds, and why (in words)."""

    enabled: bool
    reason: str
    small: ModelPlan | None = None

    def describe(self) -> str:
        if not self.enabled or self.small is None:
            return f"off ({self.reason})"
        return f"on: {self.reason}"


def plan_routing(
    settings: Settings, registry: Registry, hardware: Hardware, large: ModelPlan
) -> RoutingPlan:
    """Plan the small model beside `large`; off when disabled, not distinct, or not fitting.

    A size named in the settings that is not installed is a ConfigError; with the defaults,
    a machine with one model installed simply runs without switching (said in `reason`).
    """
    if not settings.model_routing:
        return RoutingPlan(False, "model_routing is off")
    wanted = settings.routing_small_size
    explicit = wanted not in (None, "auto")
    if not explicit:
        installed = registry.installed()
        if not installed:
            return RoutingPlan(False, "no model installed")
        wanted = installed[0]
    assert wanted is not None
    try:
        selection = select_model(wanted, registry, hardware)
    except ModelNotInstalled as exc:
        raise ConfigError(f"routing_small_size: {exc.message}", field="routing_small_size") from exc
    big = large.selection
    if selection.path.resolve() == big.path.resolve():
        have = ", ".join(registry.installed()) or "none"
        return RoutingPlan(
            False,
            f"only one distinct model ({big.size}, installed: {have}); install a second "
            f"size with `companion models pull SIZE` or `companion models add SIZE --path FILE`",
        )
    if explicit and big.size != "custom" and selection.spec.ram_gb > big.spec.ram_gb:
        raise ConfigError(
            f"routing_small_size {selection.size} is larger than the large model {big.size}",
            field="routing_small_size",
        )
    need = selection.spec.ram_gb + big.spec.ram_gb
    if need > hardware.ram_total_gb:
        return RoutingPlan(
            False,
            f"{selection.size} ({selection.spec.ram_gb} GB) and {big.size} "
            f"({big.spec.ram_gb} GB) together need {need:.1f} GB RAM; this machine has "
            f"{hardware.ram_total_gb:.1f} GB",
        )
    offload = plan_offload(
        selection.path.stat().st_size / 2**20,
        selection.spec.n_layers or 32,
        _vram_left(hardware, large),
        settings.gpu_acceleration,
        settings.n_gpu_layers,
    )
    reason = f"small {selection.size} ({selection.path.name}), large {big.size} ({big.path.name})"
    return RoutingPlan(True, reason, ModelPlan(selection, offload))


def _vram_left(hardware: Hardware, large: ModelPlan) -> Hardware:
    """The hardware as the second model sees it: the large model's share of VRAM taken."""
    gpu = hardware.best_gpu()
    layers = large.offload.n_gpu_layers
    if gpu is None or layers == 0:
        return hardware
    size_mb = large.selection.path.stat().st_size / 2**20
    n_layers = large.selection.spec.n_layers or 1
    share = 1.0 if layers < 0 else min(1.0, layers / n_layers)
    used = int(size_mb * VRAM_FACTOR * share)
    taken = replace(gpu, vram_free_mb=max(0, gpu.vram_free_mb - used))
    return replace(hardware, gpus=tuple(taken if g is gpu else g for g in hardware.gpus))


def start_engine(settings: Settings, plan: ModelPlan, shared: Shared | None = None) -> Engine:
    """Load the planned model into a new engine (continuous batching, per-session KV); with
    model_servers set, an engine over them instead (only the GGUF's vocabulary is loaded)."""
    sel = plan.selection
    if settings.model_servers:
        return open_remote(settings, sel.path, sel.size, shared.link if shared else None)
    return open_engine(settings, sel.path, sel.size, plan.offload.n_gpu_layers)


@dataclass
class Runtime:
    """Everything a server or CLI command needs, opened once."""

    settings: Settings
    store: Store
    registry: Registry
    hardware: Hardware
    plan: ModelPlan
    companion: Companion
    routing: RoutingPlan = field(default_factory=lambda: RoutingPlan(False, "model_routing is off"))
    shared: Shared = field(default_factory=local_shared)
    reaper: PendingReaper | None = None  # a shared database: turns of instances that died
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_info(self) -> ModelInfo:
        return self.companion.engine.info

    def reload_model(self, size: str | None = None) -> ModelInfo:
        """Load `size` (or the configured choice again) and swap it in; the old model is freed."""
        with self._reload_lock:
            plan = (
                plan_model(self.settings, self.registry, self.hardware, size)
                if size
                else main_plan(self.settings, self.registry, self.hardware)
            )
            engine = start_engine(self.settings, plan, self.shared)
            old = self.companion.swap_engine(engine)
            self.plan = plan
            old.close()
            log.info("model swapped: %s -> %s", old.info.name, engine.info.name)
            self.shared.bus.publish("model_reloaded", model=engine.info.name)
            self._check_routing(plan)
            return engine.info

    def _check_routing(self, plan: ModelPlan) -> None:
        """After a reload: switching stops when the main model is now the small one."""
        router, small = self.companion.router, self.routing.small
        if router is None or small is None:
            return
        if plan.selection.path.resolve() == small.selection.path.resolve():
            self.companion.router = None
            note = f"the main model is now the small one ({plan.selection.size})"
            self.companion.routing_note = note
            self.routing = RoutingPlan(False, note)
            router.small.close()
            log.warning("model switching off: %s", self.companion.routing_note)

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.close()
        if self.companion.router is not None:
            self.companion.router.small.close()
        self.companion.engine.close()
        self.companion.cached_turns.close()  # commits what its group writer holds
        if self.companion.personal is not None:
            self.companion.personal.close()
        if self.companion.cache is not None:
            self.companion.cache.close()
        self.shared.close()
        self.store.close()


def invalidation_handler(companion: Companion) -> Handler:
    """What this instance drops when any instance publishes an invalidation."""

    def handle(event: str, data: dict[str, Any]) -> None:
        cache = companion.cache
        memory = companion.personal.memory if companion.personal is not None else None
        # personas are read from the database each turn; after an edit (or a reload) the
        # in-process cache copies made under the old persona (or model) are dead weight
        if event in ("cache_cleared", "model_reloaded", "persona_edited") and cache is not None:
            cache.drop_local(data.get("scope") if event == "cache_cleared" else None)
        elif event in ("memory_deleted", "memory_changed") and memory is not None:
            memory.forget_user(str(data["user_id"]))

    return handle


def open_runtime(settings: Settings) -> Runtime:
    """Open the database, choose and load the model, and build the chat service."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.resolved_models_dir)
    hardware = detect_hardware()
    plan = main_plan(settings, registry, hardware)
    routing = plan_routing(settings, registry, hardware, plan)
    if settings.model_servers and routing.enabled:  # one model: the one the servers run
        routing = RoutingPlan(False, "model_servers is set")
    if settings.model_routing and not routing.enabled:
        log.warning("model switching requested but off: %s", routing.reason)
    store = store_for(settings)
    shared = open_shared(settings)
    reaper = None
    try:
        if store.dialect == "postgresql":  # shared: other instances' running turns are not stale
            reaper = PendingReaper(store, settings.request_timeout_s)
            stale = reaper.sweep()
        else:
            stale = store.mark_unfinished_interrupted()
        if stale:
            log.warning("%d exchanges left unfinished by the last run marked interrupted", stale)
        wants_vectors = settings.memory_enabled or (
            settings.enable_caching and settings.semantic_cache
        )
        embedder = load_embedder() if wants_vectors else None
        personal = open_personal(settings, store, embedder)
        cache = open_cache(settings, store, embedder, shared.entries) if (
            settings.enable_caching) else None
        engine = start_engine(settings, plan, shared)
    except BaseException:
        shared.close()
        store.close()
        raise
    router = None
    if routing.enabled and routing.small is not None:
        try:
            small = start_engine(settings, routing.small)
        except ModelError as exc:
            routing = RoutingPlan(False, f"the small model did not load: {exc.message}")
            log.warning("model switching off: %s", routing.reason)
        except BaseException:
            engine.close()
            store.close()
            raise
        else:
            router = ModelRouter(RoutingRule.from_settings(settings), small)
            log.info("model switching on: %s", routing.reason)
    log.info("model choice: %s; offload: %s", plan.selection.reason, plan.offload.reason)
    if personal.memory is not None:
        personal.memory.start_schedule(settings.cleanup_interval)
    if cache is not None:
        cache.start()  # cleanup_expired_cache() every cleanup_interval
    companion = Companion(
        settings, store, engine, personal=personal, cache=cache, embedder=embedder, router=router,
        locks=shared.locks,
    )
    companion.routing_note = routing.reason
    if shared.link is not None:  # a session's turns reach any instance: the notes blocks too
        companion.anchors = RedisAnchors(shared.link, companion.anchors.limit)
    personal.use_engine(lambda: companion.engine)  # LLM memory extraction (memory_llm_extraction)
    if cache is not None:
        cache.bus = shared.bus
    if personal.memory is not None:
        personal.memory.bus = shared.bus
    shared.bus.subscribe(invalidation_handler(companion))
    if reaper is not None:
        reaper.start()
    return Runtime(
        settings, store, registry, hardware, plan, companion, routing, shared=shared, reaper=reaper
    )
