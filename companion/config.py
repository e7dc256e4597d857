"""One settings object: CLI flags > env (COMPANION_*) > TOML file > preset > defaults.

The only module that reads the environment.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from companion.errors import ConfigError

SIZES = ("tiny", "base", "small", "medium", "large")
ModelSize = Literal["auto", "tiny", "base", "small", "medium", "large"]

# The spec's "Performance Tuning Guide", by name.
PRESETS: dict[str, dict[str, Any]] = {
    "low-resource": {
        "model_size": "tiny",
        "max_tokens": 128,
        "context_length": 512,
        "enable_caching": True,
        "temperature": 0.3,
    },
    "high-performance": {
        "model_size": "medium",
        "max_tokens": 512,
        "context_length": 4096,
        "enable_caching": True,
        "temperature": 0.7,
        "gpu_acceleration": True,
    },
    "production": {
        "model_size": "small",
        "max_tokens": 256,
        "context_length": 2048,
        "enable_caching": True,
        "cache_ttl_hours": 48,
        "cleanup_interval": 3600,
    },
}

DEFAULT_SYSTEM_PROMPT = (
    "You are Nova, a warm and curious companion. You remember what the user tells you, "
    "answer in a friendly, natural voice, and keep replies short unless asked for more."
)

# Words that ask for reasoning rather than small talk (whole words, case-insensitive).
DEFAULT_ROUTING_KEYWORDS = (
    "why",
    "explain",
    "analyze",
    "analyse",
    "compare",
    "prove",
    "derive",
    "calculate",
    "step by step",
    "difference between",
    "pros and cons",
    "trade-off",
    "tradeoff",
    "evaluate",
    "debug",
    "implement",
    "algorithm",
    "summarize",
    "summarise",
    "plan",
)

_toml_path: ContextVar[Path | None] = ContextVar("companion_toml_path", default=None)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("companion", appauthor=False))


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by --config or COMPANION_CONFIG ([companion] table or top
    level)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _toml_path.get()
        if path is None:
            return {}
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        table = data.get("companion", data)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [companion] must be a table")
        return table


class Settings(BaseSettings):
    """Every setting of the service. `companion config show` prints the effective values."""

    model_config = SettingsConfigDict(env_prefix="COMPANION_", extra="forbid")

    preset: Literal["low-resource", "high-performance", "production"] | None = None

    # Model choice and loading
    model_size: ModelSize = "auto"
    model_path: Path | None = Field(default=None, description="explicit GGUF file; wins over size")
    gpu_acceleration: bool = True
    n_gpu_layers: int | None = Field(default=None, description="None = from free VRAM; -1 = all")
    n_threads: int | None = Field(default=None, ge=1)
    models_dir: Path | None = None

    # Generation
    max_tokens: int = Field(default=256, ge=1, le=8192)
    context_length: int = Field(default=2048, ge=512, le=131072)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.1, gt=0.0, le=3.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None

    # Engine: continuous batching and the KV cache (llm/batched.py)
    engine_parallel: Annotated[int, Field(ge=1, le=128)] | Literal["auto"] = Field(
        default=32,
        description="most sequences decoded together; auto = a decode probe at start-up",
    )
    engine_stream_floor_tps: float = Field(
        default=5.0, ge=0.0, le=1000.0,
        description="tokens/s each stream keeps while others wait: no more sequences join a "
        "step once it would be slower (about reading speed; 0 = always engine_parallel)",
    )
    engine_max_queue: int = Field(default=64, ge=0, description="waiting requests; more get 429")
    engine_kv_tokens: int | None = Field(
        default=None, ge=512, description="KV cells for all sequences; None = context x parallel"
    )
    engine_batch_tokens: int = Field(
        default=256, ge=16, le=8192, description="tokens per decode step (prompt chunk budget)"
    )
    engine_cached_sessions: int = Field(
        default=64, ge=0, le=200, description="idle sessions kept in the KV cache (LRU)"
    )
    engine_host_kv_mb: int | None = Field(
        default=None, ge=0, description="evicted sessions' KV state kept in RAM; None = from free"
    )
    engine_disk_kv_mb: int = Field(
        default=4096, ge=0, description="evicted sessions' KV state on disk beyond it; 0 = off"
    )
    engine_kv_layout: Literal["auto", "unified", "split"] = Field(
        default="auto",
        description="one KV buffer for all sequences, or one stream each (split: each token "
        "attends over its own sequence only); auto = split on CPU with a fixed engine_parallel",
    )
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field(
        default="f16", description="K/V cache element type (q8_0/q4_0: about 2x/3.5x the cells)"
    )

    # Model switching (companion/llm/routing.py; docs/engine.md "Model switching"): with two
    # installed models, short simple messages go to the small one and the rest to the large one.
    model_routing: bool = Field(
        default=False, description="send each message to a small or a large model"
    )
    routing_small_size: ModelSize | None = Field(
        default=None, description="the small model; None = the smallest installed"
    )
    routing_large_size: ModelSize | None = Field(
        default=None, description="the large model; None = the usual choice (model_size/model_path)"
    )
    routing_max_tokens: int = Field(
        default=32, ge=1, description="longer messages (tokens) go to the large model"
    )
    routing_max_questions: int = Field(
        default=1, ge=1, description="more questions or numbered parts than this go large"
    )
    routing_history_tokens: int = Field(
        default=1500, ge=0, description="longer recent history goes large; 0 = ignore history"
    )
    routing_keywords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ROUTING_KEYWORDS),
        description="reasoning words or phrases that send a message to the large model",
    )

    # Model servers (companion/llm/remote.py; docs/deploy.md "Many instances, many model
    # servers"): with any set, this instance loads no model and generates on them
    model_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="model server base URLs: llama-server, or OpenAI /v1 (vLLM, companion); "
        "a JSON list or comma-separated; [] = local model",
    )
    model_server_api: Literal["auto", "llama", "openai"] = Field(
        default="auto",
        description="protocol of the model servers: auto = a URL ending in /v1 is OpenAI's "
        "/v1/completions, any other llama-server's /completion",
    )
    model_server_routing: Literal["affinity", "round_robin"] = Field(
        default="affinity", description="affinity keeps each session on one server (its cache)"
    )
    model_server_max_load: int = Field(
        default=8, ge=1, description="requests in flight above which a server takes no new session"
    )
    model_server_probe_s: float = Field(
        default=0.5, gt=0, le=10, description="seconds between health probes of each server"
    )
    model_server_pin_slots: bool = Field(
        default=False, description="send each session to a fixed slot (llama-server id_slot)"
    )

    # Cache
    enable_caching: bool = True
    cache_ttl_hours: float = Field(default=24, gt=0)
    cleanup_interval: int = Field(default=3600, ge=10, description="seconds between cleanups")
    cache_max_entries: int = Field(default=50_000, ge=1, description="rows kept; LRU eviction")
    cache_lru_entries: int = Field(default=10_000, ge=0, description="entries held in process")
    semantic_cache: bool = Field(default=True, description="also answer verified paraphrases")

    # Conversation
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_messages: int = Field(default=10, ge=0, le=200)
    history_step: int = Field(
        default=10, ge=0, le=200,
        description="the history window moves on this many messages at a time (so it holds "
        "history_messages to history_messages + history_step - 1): between moves each prompt "
        "starts with the last one and the model server's KV cache reuses it; 0 = slide by one",
    )  # fmt: skip
    max_message_chars: int = Field(default=8000, ge=1)
    request_timeout_s: float = Field(default=300, gt=0)

    # Long-term memory (the spec's "Memory Cleanup Strategy"; cleanup runs every cleanup_interval)
    memory_enabled: bool = True
    memory_top_k: int = Field(default=5, ge=0, le=50, description="memories per prompt")
    memory_days_old: float = Field(default=90, gt=0)
    memory_min_importance: float = Field(default=0.3, ge=0.0, le=1.0)
    memory_max_per_user: int = Field(default=1000, ge=1)
    memory_max_episodes: int = Field(
        default=10_000, ge=1, description="turns (episodes) kept per user"
    )
    memory_llm_extraction: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="also extract facts with the model (JSON grammar); auto = base size or larger",
    )

    # Storage and server
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None, description="None = SQLite in data_dir; or postgresql+psycopg://..."
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=1000, description="PostgreSQL connections kept per instance"
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=1000, description="extra PostgreSQL connections under bursts"
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:6379/0 shares cache, limits and locks"
    )
    redis_prefix: str = Field(default="companion:", description="prefix of every Redis key")
    host: str = "127.0.0.1"
    port: int = Field(default=13443, ge=1, le=65535)

    # Access and limits (companion/auth.py, companion/limits.py)
    auth: bool = Field(
        default=False, description="require API keys; off is allowed on loopback only"
    )
    rate_limit_per_minute: int = Field(default=120, ge=1, description="chat requests per user")
    max_concurrent_per_user: int = Field(default=4, ge=1, description="chat requests in flight")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="larger bodies get 413")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("model_servers", mode="before")
    @classmethod
    def _server_list(cls, value: Any) -> Any:
        """COMPANION_MODEL_SERVERS: a JSON list, or URLs separated by commas or spaces."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON list of URLs: {exc}") from None
        return [u for u in text.replace(",", " ").split() if u]

    @field_validator("model_servers", mode="after")
    @classmethod
    def _server_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @field_validator("data_dir", "models_dir", "model_path", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'companion.db'}"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def public_dict(self) -> dict[str, Any]:
        """The effective settings as JSON-friendly values."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.db_url)
        data["redis_url"] = mask_url(self.redis_url)
        data["models_dir"] = str(self.resolved_models_dir)
        return data


def mask_url(url: str | None) -> str | None:
    """The url with any password replaced by ***, safe to print or log."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def config_path(config_file: Path | str | None = None, data_dir: Path | str | None = None) -> Path:
    """The TOML file in effect: --config, else COMPANION_CONFIG, else <data_dir>/companion.toml."""
    explicit = config_file or os.environ.get("COMPANION_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = data_dir or os.environ.get("COMPANION_DATA_DIR") or default_data_dir()
    return Path(base).expanduser() / "companion.toml"


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; `overrides` are CLI flags (None values are ignored)."""
    path = config_path(config_file, overrides.get("data_dir"))
    explicit = bool(config_file or os.environ.get("COMPANION_CONFIG"))
    token = _toml_path.set(path if explicit or path.exists() else None)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    finally:
        _toml_path.reset(token)
    return apply_preset(settings)


def apply_preset(settings: Settings) -> Settings:
    """Fill the preset's values into every field not set explicitly."""
    if settings.preset is None:
        return settings
    unset = {
        k: v for k, v in PRESETS[settings.preset].items() if k not in settings.model_fields_set
    }
    return settings.model_copy(update=unset)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


def save_setting(path: Path, key: str, value: str | int | float | bool) -> None:
    """Set one top-level key in a TOML settings file, keeping the others."""
    if key not in Settings.model_fields:
        raise ConfigError(f"unknown setting {key!r}")
    data: dict[str, Any] = {}
    if path.exists():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    table = data["companion"] if isinstance(data.get("companion"), dict) else data
    table[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(_dump_toml(data), encoding="utf-8")
    tmp.replace(path)


def _dump_toml(data: dict[str, Any]) -> str:
    """TOML for flat tables of scalars and lists (all a settings file holds)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
