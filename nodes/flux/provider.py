"""The FLUX model policy the engine's generic model manager is given at start-up: how a
`ModelHandle` is loaded and sized, whether only the demo model is installed, writing the demo
model on a machine with no FLUX model, and pointing workflows at it there."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from nodes.base import LoadedModel, ModelProvider, NodeEnv
from nodes.flux.demo import DEMO_NAME, ensure_demo_model
from nodes.flux.handles import ModelHandle
from nodes.flux.loaders import LOADER_TYPES
from nodes.flux.sources import (
    PARTS,
    estimate_bytes,
    find_pipelines,
    has_single_files,
    load_part,
    resolve_dtype,
)

log = logging.getLogger("fluxloom.models")


def load_handle(handle: ModelHandle, device: torch.device) -> LoadedModel:
    """Read one part of a diffusers pipeline folder onto `device`."""
    loaded = load_part(Path(handle.path), handle.kind, handle.quantization, handle.dtype, device)
    return LoadedModel(module=loaded.module, tokenizer=loaded.tokenizer, device=device, dtype=loaded.dtype)


def estimate_handle(handle: ModelHandle, device: torch.device) -> int:
    """Bytes the part will take once loaded, read from its safetensors headers."""
    folder = Path(handle.path) / PARTS[handle.kind].subfolder
    return estimate_bytes(folder, resolve_dtype(handle.dtype, device, folder), handle.quantization)


def any_model_installed(models_dir: Path | str) -> bool:
    return bool(find_pipelines(models_dir)) or has_single_files(models_dir)


def demo_only(models_dir: Path | str) -> bool:
    """The one rule for "only the demo model is installed" (the canvas and the API say it from here)."""
    return set(find_pipelines(models_dir)) == {DEMO_NAME} and not has_single_files(models_dir)


def flux_model_provider(models_dir: Path | str) -> ModelProvider:
    return ModelProvider(load=load_handle, estimate=estimate_handle, demo_only=lambda: demo_only(models_dir))


def ensure_some_model(models_dir: Path | str) -> None:
    """Write the demo model when no FLUX model is installed at all, so a new machine runs."""
    if not any_model_installed(models_dir):
        log.info(
            "no FLUX model found under %s; creating the demo model (random weights, images are noise)",
            models_dir,
        )
        ensure_demo_model(Path(models_dir))


def substitute_demo_model(prompt: dict, env: NodeEnv) -> list[str]:
    """Prompt hook: when a loader names a model that is not installed and the only installed
    FLUX model is the demo, point the loader at the demo and say so. With any real model
    installed nothing is rewritten, and validation lists the installed choices."""
    if not demo_only(env.models_dir):
        return []
    warnings: list[str] = []
    for node in prompt.values():
        if not isinstance(node, dict) or node.get("class_type") not in LOADER_TYPES:
            continue
        inputs = node.get("inputs")
        source = inputs.get("source") if isinstance(inputs, dict) else None
        if isinstance(source, str) and source != DEMO_NAME:
            inputs["source"] = DEMO_NAME
            message = (
                f"source '{source}' is not installed; using the demo model {DEMO_NAME} "
                "(random weights: images are noise)"
            )
            if message not in warnings:
                warnings.append(message)
    return warnings
