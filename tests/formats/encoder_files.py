"""Test helpers: ComfyUI-style single text encoder files written from a tiny random FLUX pipeline
(nodes/flux/demo.py), in the layouts ComfyUI's `text_encoders/` folder holds."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def folder_state(pipeline: Path, subfolder: str) -> dict[str, torch.Tensor]:
    """A component's weights as the diffusers folder stores them (transformers 5 names)."""
    state: dict[str, torch.Tensor] = {}
    for file in sorted((pipeline / subfolder).glob("*.safetensors")):
        state.update(load_file(file))
    return state


def clip_l_state(pipeline: Path) -> dict[str, torch.Tensor]:
    """CLIP-L as in ComfyUI's clip_l.safetensors: `text_model.` keys and a text_projection."""
    state = {"text_model." + k: v for k, v in folder_state(pipeline, "text_encoder").items()}
    width = state["text_model.final_layer_norm.weight"].shape[0]
    state["text_projection.weight"] = torch.eye(width)
    return state


def t5_state(pipeline: Path) -> dict[str, torch.Tensor]:
    """T5 as in ComfyUI's t5xxl_fp16.safetensors: `shared.weight` and `encoder.*`."""
    state = folder_state(pipeline, "text_encoder_2")
    if "shared.weight" not in state:
        state["shared.weight"] = state.pop("encoder.embed_tokens.weight")
    state.pop("encoder.embed_tokens.weight", None)
    return state


def is_linear_weight(key: str, value: torch.Tensor) -> bool:
    return (
        value.ndim == 2
        and key.endswith(".weight")
        and "shared" not in key
        and "embedding" not in key
        and ("relative_attention_bias" not in key)
    )


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def to_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """t5xxl_fp8_e4m3fn: every floating tensor stored as float8_e4m3fn."""
    return {k: v.to(FP8) if v.is_floating_point() else v for k, v in state.items()}


def to_scaled_fp8(
    state: dict[str, torch.Tensor], other: torch.dtype = torch.bfloat16
) -> dict[str, torch.Tensor]:
    """t5xxl_fp8_e4m3fn_scaled: Linear weights as fp8 with a per-tensor `scale_weight` (the real
    weight is fp8 × scale), other tensors in `other`, and the `scaled_fp8` marker key."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=FP8)}
    for key, value in state.items():
        if is_linear_weight(key, value):
            scale = value.abs().max().float() / FP8_MAX
            out[key] = (value.float() / scale).to(FP8)
            out[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
        else:
            out[key] = value.to(other)
    return out


def dequantized(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """What an fp8 file means in `dtype`, computed as the loader casts it (weight.to(dtype) *
    scale.to(dtype)): a plain file with these weights must give the same output."""
    out = {}
    for key, value in state.items():
        if key == "scaled_fp8" or key.endswith(".scale_weight"):
            continue
        real = value.to(dtype)
        scale = state.get(key.removesuffix(".weight") + ".scale_weight")
        out[key] = real if scale is None else real * scale.to(dtype)
    return out


def t5_state_from(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def write(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))  # no shared storage
    return path
