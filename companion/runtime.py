"""The one place that wires storage, hardware, model choice, engine and chat service together."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from companion.cache import open_cache
from companion.chat import Companion
from companion.config import Settings
from companion.embed import load_embedder
from companion.llm.base import ModelInfo
from companion.llm.batched import BatchedEngine, open_engine
from companion.llm.hardware import Hardware, Offload, Selection, detect_hardware, plan_offload, select_model
from companion.llm.registry import Registry
from companion.personal import open_personal
from companion.storage import Store, open_store

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


def start_engine(settings: Settings, plan: ModelPlan) -> BatchedEngine:
    """Load the planned model into a new engine (continuous batching, per-session KV)."""
    sel = plan.selection
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
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_info(self) -> ModelInfo:
        return self.companion.engine.info

    def reload_model(self, size: str | None = None) -> ModelInfo:
        """Load `size` (or the configured choice again) and swap it in; the old model is freed."""
        with self._reload_lock:
            plan = plan_model(self.settings, self.registry, self.hardware, size)
            engine = start_engine(self.settings, plan)
            old = self.companion.swap_engine(engine)
            self.plan = plan
            old.close()
            log.info("model swapped: %s -> %s", old.info.name, engine.info.name)
            return engine.info

    def close(self) -> None:
        self.companion.engine.close()
        if self.companion.personal is not None:
            self.companion.personal.close()
        if self.companion.cache is not None:
            self.companion.cache.close()
        self.store.close()


def open_runtime(settings: Settings) -> Runtime:
    """Open the database, choose and load the model, and build the chat service."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.resolved_models_dir)
    hardware = detect_hardware()
    plan = plan_model(settings, registry, hardware)
    store = open_store(settings.db_url)
    try:
        stale = store.mark_unfinished_interrupted()
        if stale:
            log.warning("%d exchanges left unfinished by the last run marked interrupted", stale)
        wants_vectors = settings.memory_enabled or (settings.enable_caching and settings.semantic_cache)
        embedder = load_embedder() if wants_vectors else None
        personal = open_personal(settings, store, embedder)
        cache = open_cache(settings, store, embedder) if settings.enable_caching else None
        engine = start_engine(settings, plan)
    except BaseException:
        store.close()
        raise
    log.info("model choice: %s; offload: %s", plan.selection.reason, plan.offload.reason)
    if personal.memory is not None:
        personal.memory.start_schedule(settings.cleanup_interval)
    if cache is not None:
        cache.start()  # cleanup_expired_cache() every cleanup_interval
    companion = Companion(settings, store, engine, personal=personal, cache=cache, embedder=embedder)
    return Runtime(settings, store, registry, hardware, plan, companion)


