"""The FLUX model policy the engine's generic model manager is given at start-up: how a
`ModelHandle` is loaded and sized (a diffusers pipeline folder, or a single file in any format of
nodes/flux/formats, with its LoRAs), whether only the demo model is installed, writing the demo
model on a machine with no FLUX model, and pointing workflows at it there."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from nodes.base import LoadedModel, ModelProvider, NodeEnv
from nodes.flux import catalog
from nodes.flux.demo import ensure_demo_model
from nodes.flux.demo_files import ensure_demo_files
from nodes.flux.handles import ModelHandle
from nodes.flux.sources import PARTS, estimate_bytes, load_part, resolve_dtype

log = logging.getLogger("fluxloom.models")

# Inputs that name a model: (class_type, input) → the kind of model. "TEXT_ENCODER" is a
# ComfyUI CLIP loader's input, which takes CLIP-L or T5 (told apart by the name when the demo
# stands in). Packages with their own loaders add theirs (nodes/comfy/loaders.py).
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("LoadCLIP", "source"): "CLIP",
    ("LoadT5-8bit", "source"): "T5",
    ("LoadFluxTransformer", "source"): "FLUX_MODEL",
    ("LoadVAE", "source"): "VAE",
    ("LoadLoRA", "lora"): "LORA",
}
TEXT_ENCODER = "TEXT_ENCODER"


def load_handle(handle: ModelHandle, device: torch.device) -> LoadedModel:
    """Read one model part onto `device`, then apply its LoRAs."""
    path = Path(handle.path)
    if path.is_dir():
        loaded = load_part(path, handle.kind, handle.quantization, handle.dtype, device)
        module, tokenizer, dtype = loaded.module, loaded.tokenizer, loaded.dtype
    else:
        module, tokenizer = _load_file(handle, device)
        dtype = module.dtype
        module.eval()  # as load_part: eval() only (see its comment on requires_grad)
    if handle.loras:
        from nodes.flux.lora import apply_loras

        apply_loras(module, [(Path(f), strength) for f, strength, _ in handle.loras], dtype)
    return LoadedModel(module=module, tokenizer=tokenizer, device=device, dtype=dtype)


def _load_file(handle: ModelHandle, device: torch.device) -> tuple[torch.nn.Module, object | None]:
    from nodes.flux import formats
    from nodes.flux.formats.text_encoders import load_text_encoder_file

    path = Path(handle.path)
    if handle.kind == "FLUX_MODEL":
        return formats.load_transformer_file(path, handle.quantization, handle.dtype, device), None
    if handle.kind == "VAE":
        return formats.load_vae_file(path, handle.dtype, device), None
    return load_text_encoder_file(path, handle.kind, handle.quantization, handle.dtype, device)


def estimate_handle(handle: ModelHandle, device: torch.device) -> int:
    """Bytes the part will take once loaded, read from headers alone (LoRA branches on quantized
    layers add about their files' size)."""
    path = Path(handle.path)
    if path.is_dir():
        folder = path / PARTS[handle.kind].subfolder
        size = estimate_bytes(folder, resolve_dtype(handle.dtype, device, folder), handle.quantization)
    elif handle.kind in ("FLUX_MODEL", "VAE"):
        from nodes.flux.formats import estimate_file_bytes

        part = "vae" if handle.kind == "VAE" else "transformer"
        size = estimate_file_bytes(path, handle.quantization, handle.dtype, device, part=part)
    else:
        from nodes.flux.formats.text_encoders import estimate_text_encoder_bytes

        size = estimate_text_encoder_bytes(path, handle.kind, handle.quantization, handle.dtype)
    if handle.quantization != "none":
        size += sum(Path(f).stat().st_size for f, _, _ in handle.loras if Path(f).is_file())
    return size


def flux_model_provider(env: NodeEnv) -> ModelProvider:
    return ModelProvider(load=load_handle, estimate=estimate_handle, demo_only=lambda: catalog.demo_only(env))


def ensure_some_model(env: NodeEnv) -> None:
    """On a machine with no FLUX model at all, write the demo model (a pipeline folder, and the
    same weights as ComfyUI single files so that ComfyUI's templates run too)."""
    if catalog.any_model_installed(env):
        return
    log.info(
        "no FLUX model found under %s; creating the demo model (random weights, images are noise)",
        env.models_dir,
    )
    ensure_demo_model(Path(env.models_dir))
    ensure_demo_files(Path(env.models_dir))


def substitute_demo_model(prompt: dict, env: NodeEnv) -> list[str]:
    """Prompt hook: when a loader names a model that is not installed and the only installed
    FLUX model is the demo, point the loader at the demo and say so. With any real model
    installed nothing is rewritten, and validation lists the installed choices. A prompt with no
    model loader costs nothing (the folders are looked at only when one names a model)."""
    wanted = [
        (node["inputs"], name, kind)
        for node in prompt.values()
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict)
        for (class_type, name), kind in MODEL_INPUTS.items()
        if node.get("class_type") == class_type and isinstance(node["inputs"].get(name), str)
    ]
    if not wanted:
        return []
    offered = catalog.inventory(env)
    if not catalog.demo_only(env, offered):
        return []
    warnings: list[str] = []
    for inputs, name, kind in wanted:
        value = inputs[name]
        if kind == TEXT_ENCODER:  # a ComfyUI CLIP loader: CLIP-L or T5, told apart by the name
            kind = "T5" if "t5" in value.lower() else "CLIP"
        demo = catalog.demo_source(offered, kind)
        if value in offered.get(kind, {}) or demo is None:
            continue
        inputs[name] = demo
        message = (
            f"{name} '{value}' is not installed; using the demo model {demo} "
            "(random weights: images are noise)"
        )
        if message not in warnings:
            warnings.append(message)
    return warnings
