"""Settings: presets, precedence, TOML files and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion.config import PRESETS, load_settings, save_setting
from companion.errors import ConfigError


def test_defaults_follow_the_spec(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert (s.model_size, s.context_length, s.enable_caching, s.cache_ttl_hours) == (
        "auto",
        2048,
        True,
        24,
    )
    assert (s.host, s.port, s.cleanup_interval) == ("127.0.0.1", 13443, 3600)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_apply_the_spec_values(tmp_path: Path, name: str) -> None:
    s = load_settings(data_dir=tmp_path, preset=name)
    for key, value in PRESETS[name].items():
        assert getattr(s, key) == value


def test_low_resource_preset_values(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, preset="low-resource")
    assert (s.model_size, s.max_tokens, s.context_length, s.temperature) == ("tiny", 128, 512, 0.3)


def test_precedence_flag_env_toml_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[companion]\nmax_tokens = 111\ntemperature = 0.5\npreset = "production"\n')
    s = load_settings(cfg, data_dir=tmp_path)
    assert (s.max_tokens, s.temperature, s.model_size, s.cache_ttl_hours) == (111, 0.5, "small", 48)
    monkeypatch.setenv("COMPANION_MAX_TOKENS", "222")
    assert load_settings(cfg, data_dir=tmp_path).max_tokens == 222
    assert load_settings(cfg, data_dir=tmp_path, max_tokens=333).max_tokens == 333


def test_default_toml_in_data_dir_and_save_setting(tmp_path: Path) -> None:
    save_setting(tmp_path / "companion.toml", "model_size", "tiny")
    save_setting(tmp_path / "companion.toml", "max_tokens", 64)
    s = load_settings(data_dir=tmp_path)
    assert (s.model_size, s.max_tokens) == ("tiny", 64)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"model_size": "huge"}, "model_size"),
        ({"context_length": 100}, "context_length"),
        ({"temperature": 9}, "temperature"),
        ({"preset": "turbo"}, "preset"),
    ],
)
def test_bad_values_name_the_field(
    tmp_path: Path, overrides: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(data_dir=tmp_path, **overrides)


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("max_tokens = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown setting"):
        save_setting(tmp_path / "x.toml", "no_such_setting", 1)


@pytest.mark.parametrize(
    "raw", ['["http://m0:8080", "http://m1:8080/v1"]', "http://m0:8080, http://m1:8080/v1"]
)
def test_model_servers_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("COMPANION_MODEL_SERVERS", raw)
    assert load_settings(data_dir=tmp_path).model_servers == ["http://m0:8080", "http://m1:8080/v1"]


def test_a_model_server_that_is_not_a_url_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPANION_MODEL_SERVERS", "m0:8080")
    with pytest.raises(ConfigError, match="model_servers"):
        load_settings(data_dir=tmp_path)
