"""companion models list | info | select | pull | add"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from companion.cli import Ctx, cli
from companion.cli.remote import ServerDown, remote, url_option
from companion.config import config_path, save_setting
from companion.llm.hardware import detect_hardware, select_model, system_tier
from companion.llm.probe import describe as describe_engine
from companion.llm.registry import Registry, check_size
from companion.llm.routing import RoutingRule
from companion.runtime import main_plan, plan_routing


def registry_of(obj: Ctx) -> Registry:
    return Registry(obj.settings().resolved_models_dir)


@cli.group()
def models() -> None:
    """List, inspect, choose and install models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_models(obj: Ctx, as_json: bool) -> None:
    """Every size, installed or absent.

    Example: companion models list
    """
    rows = registry_of(obj).rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'size':7} {'model':44} {'quant':7} {'MB':>7} {'RAM GB':>6} {'ctx':>6}  status")
    for r in rows:
        status = f"installed ({r['source']}) {r['path']}" if r["installed"] else "absent"
        click.echo(
            f"{r['size']:7} {r['name'][:44]:44} {r['quantization']:7} {r['size_mb']:>7.0f} "
            f"{r['ram_gb']:>6.1f} {r['context_limit']:>6}  {status}"
        )


@models.command("info")
@click.pass_obj
def info(obj: Ctx) -> None:
    """The hardware tier, the model that would be loaded, why, its GPU offload, and switching.

    Example: companion --model-size auto models info
    """
    settings = obj.settings()
    hw = detect_hardware()
    registry = Registry(settings.resolved_models_dir)
    plan = main_plan(settings, registry, hw)
    routing = plan_routing(settings, registry, hw, plan)
    click.echo(f"hardware: {hw.describe()}")
    click.echo(f"tier:     {system_tier(hw)}")
    click.echo(f"model:    {plan.selection.size} -> {plan.selection.path}")
    click.echo(f"why:      {plan.selection.reason}")
    click.echo(
        f"offload:  {plan.offload.device}, n_gpu_layers={plan.offload.n_gpu_layers} "
        f"({plan.offload.reason})"
    )
    click.echo(f"routing:  {routing.describe()}")
    click.echo(f"engine:   {describe_engine(settings, plan.selection.path)}")
    if routing.enabled:
        rule = RoutingRule.from_settings(settings)
        history = f", history > {rule.history_tokens} tokens" if rule.history_tokens else ""
        click.echo(
            f"rule:     large when > {rule.max_tokens} tokens, code, "
            f"> {rule.max_questions} questions or parts, a reasoning word{history}; "
            f"else small"
        )


@models.command("select")
@click.argument("size")
@click.option("--no-reload", is_flag=True, help="Do not ask a running server to swap models.")
@url_option
@click.pass_obj
def select(obj: Ctx, size: str, no_reload: bool, url: str | None, key: str | None) -> None:
    """Make SIZE the model to use (saved in the settings file); a running server swaps to it.

    Example: companion models select tiny --url http://127.0.0.1:13443
    """
    settings = obj.settings()
    size = check_size(size)
    select_model(size, Registry(settings.resolved_models_dir), detect_hardware())  # installed?
    path = config_path(obj.config, settings.data_dir)
    save_setting(path, "model_size", size)
    click.echo(f"model_size = {size} saved in {path}")
    if no_reload:
        return
    try:
        loaded = remote(obj, url, key).call("POST", "/api/v1/models/reload", {"size": size})
    except ServerDown:
        if url:
            raise
        click.echo("no running server to reload; the next start uses it")
        return
    click.echo(f"the running server now serves {loaded['loaded']['name']}")


@models.command("pull")
@click.argument("size")
@click.pass_obj
def pull(obj: Ctx, size: str) -> None:
    """Download SIZE from Hugging Face (needs network).

    Example: companion models pull small
    """
    path = registry_of(obj).pull(size, tqdm_class=rich_bar())
    click.echo(f"{size}: {path}")


def rich_bar() -> Any:
    """A tqdm class that draws with rich (for the hub's download bar)."""
    import warnings

    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm_rich

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    return tqdm_rich


@models.command("add")
@click.argument("size")
@click.option("--path", "file", required=True, type=click.Path(path_type=Path))
@click.pass_obj
def add(obj: Ctx, size: str, file: Path) -> None:
    """Register a local GGUF file as SIZE (no copy).

    Example: companion models add small --path ~/models/Llama-3.2-3B-Instruct-Q4_K_M.gguf
    """
    path = registry_of(obj).add(size, file)
    click.echo(f"{size}: {path}")
