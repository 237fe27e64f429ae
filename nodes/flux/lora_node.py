"""LoadLoRA: a FLUX LoRA (kohya, diffusers/PEFT or xlabs layout) on a transformer, stackable.

The node outputs the transformer's handle with the LoRA added (nodes/flux/handles.py): a
different LoRA, strength or file is a different model for the model manager and a different key
for the cache, and strength 0 gives back the very handle it was given (so the plain model,
exactly). The LoRA is applied when the model is loaded (nodes/flux/provider.py); its shapes are
checked here against the transformer's config, so a LoRA for another model fails in this node.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from nodes.base import Combo, Float, Input, NodeContext, NodeEnv, Output, Socket, node
from nodes.flux import catalog
from nodes.flux.handles import ModelHandle
from nodes.flux.lora import check_lora_for_config, lora_fingerprint
from nodes.flux.sources import ModelSourceError
from nodes.flux.types import FLUX_MODEL


def lora_choices(env: NodeEnv | None) -> list[str]:
    return list(catalog.model_files(env, "LORA")) if env is not None else []


def lora_path(env: NodeEnv, name: str) -> Path:
    found = catalog.model_files(env, "LORA").get(name)
    if found is None:
        installed = ", ".join(lora_choices(env)) or "none"
        raise ModelSourceError(
            f"LoRA {name!r} is not installed under {env.models_dir}/loras (installed: {installed})"
        )
    return found


def _fingerprint(env: NodeEnv, lora: str, **_) -> str:
    """Cache key part: the LoRA file itself, so that replacing the file re-runs."""
    try:
        return lora_fingerprint(lora_path(env, lora))
    except (OSError, ModelSourceError):
        return "unreadable"  # the node reports the problem, naming the file


def transformer_config(handle: ModelHandle) -> dict:
    """The transformer's config without loading it: a pipeline's config.json, or read off a
    single file's tensors."""
    path = Path(handle.path)
    if path.is_dir():
        return json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
    from nodes.flux.formats.bfl_transformer import infer_config, open_transformer

    return infer_config(open_transformer(path))


def with_lora(ctx: NodeContext, model: ModelHandle, lora: str, strength: float) -> ModelHandle:
    """`model` with one more LoRA (shared by LoadLoRA and ComfyUI's LoRA loaders)."""
    if not isinstance(model, ModelHandle) or model.kind != "FLUX_MODEL":
        raise TypeError(f"model must come from a FLUX transformer loader, got {type(model).__name__}")
    if strength == 0:
        return model
    path = lora_path(ctx.env, lora)
    check_lora_for_config(path, transformer_config(model))
    return replace(model, loras=(*model.loras, (str(path), float(strength), lora_fingerprint(path))))


@node(
    "LoadLoRA",
    category="flux/loaders",
    display_name="Load LoRA",
    description="Apply a FLUX LoRA (kohya, diffusers/PEFT or xlabs) to the transformer; chain several "
    "to stack them. Strength 0 leaves the model exactly as it was.",
    inputs=[
        Input("model", Socket(FLUX_MODEL)),
        Input("lora", Combo(choices=lora_choices), tooltip="a LoRA file under MODELS/loras/"),
        Input(
            "strength",
            Float(default=1.0, min=-10.0, max=10.0, step=0.01),
            tooltip="how much of the LoRA's change to apply (0: none, negative: the opposite)",
        ),
    ],
    outputs=[Output(FLUX_MODEL, "model")],
    fingerprint=_fingerprint,
)
def load_lora(ctx: NodeContext, model: ModelHandle, lora: str, strength: float) -> tuple[ModelHandle]:
    return (with_lora(ctx, model, lora, strength),)
