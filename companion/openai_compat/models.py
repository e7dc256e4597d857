"""The model ids the OpenAI routes answer to."""

from __future__ import annotations

from companion.errors import NotFound
from companion.runtime import Runtime


class ModelNotFound(NotFound):
    code = "model_not_found"


def model_ids(rt: Runtime) -> list[str]:
    """What `model` may name: the loaded model, "companion", and every installed size."""
    sizes = [r["size"] for r in rt.registry.rows() if r["installed"]]
    return [rt.model_info.name, "companion", *sizes]


def check_model(rt: Runtime, model: str) -> None:
    """404 model_not_found for a model companion does not serve (as OpenAI answers)."""
    if model not in model_ids(rt):
        raise ModelNotFound(
            f"The model {model!r} does not exist; GET /v1/models lists the models served",
            field="model",
        )
