"""Loader nodes: pick a model part and how to load it. They output `ModelHandle`s, which name the
part and hold no weights; weights are read when a consumer first uses the handle, so that the
model manager decides what is on the device at any time."""

from __future__ import annotations

from pathlib import Path

from nodes.base import Combo, Input, NodeContext, Output, node
from nodes.flux import catalog
from nodes.flux import quantization as q
from nodes.flux.handles import ModelHandle
from nodes.flux.sources import DTYPE_CHOICES, check_loadable
from nodes.flux.types import CLIP_L, FLUX_MODEL, T5, VAE

LOADER_TYPES = ("LoadCLIP", "LoadT5-8bit", "LoadFluxTransformer", "LoadVAE")
CATEGORY = "flux/loaders"


def sources(kind: str):
    """Combo choices: the installed pipelines that have this loader's part, and the single files
    that hold it (nodes/flux/catalog.py)."""
    return lambda env: catalog.source_choices(env, kind)


def _source_input(kind: str) -> Input:
    return Input(
        "source",
        Combo(choices=sources(kind)),
        tooltip="a diffusers FLUX pipeline folder under MODELS/diffusers/ (e.g. FLUX.1-dev), or a "
        "single file in ComfyUI's model folders (e.g. diffusion_models/flux1-dev.safetensors)",
    )


def _dtype_input() -> Input:
    return Input(
        "dtype",
        Combo(choices=DTYPE_CHOICES, default="auto"),
        tooltip="auto: bf16 on CUDA, the stored dtype on the CPU",
    )


def _quant_input() -> Input:
    return Input(
        "quantization",
        Combo(choices=q.CHOICES, default=q.DEFAULT),
        tooltip="int8 (bitsandbytes) halves bf16 weights; nf4 quarters them; see docs/models.md",
    )


def model_handle(ctx: NodeContext, kind: str, source: str, quantization: str, dtype: str) -> ModelHandle:
    """The handle a loader outputs, after the cheap checks (the file or folder is there and has
    the part, the quantization applies), so that an impossible choice fails in the loader,
    naming it, rather than later inside the node that first uses the model."""
    path = catalog.source_path(ctx.env, source, kind)
    device = ctx.env.models.device if ctx.env.models is not None else None
    check_loadable(Path(path), kind, quantization, device)
    return ModelHandle(kind=kind, source=source, path=str(path), quantization=quantization, dtype=dtype)


@node(
    "LoadCLIP",
    category=CATEGORY,
    display_name="Load CLIP",
    description="CLIP-L text encoder (and its tokenizer) of a FLUX model; gives the pooled prompt.",
    inputs=[_source_input("CLIP"), _dtype_input()],
    outputs=[Output(CLIP_L, "clip")],
)
def load_clip(ctx: NodeContext, source: str, dtype: str) -> tuple[ModelHandle]:
    return (model_handle(ctx, "CLIP", source, q.NONE, dtype),)


@node(
    "LoadT5-8bit",
    category=CATEGORY,
    display_name="Load T5 (8-bit)",
    description="T5-XXL text encoder (and its tokenizer) of a FLUX model, quantized to save memory.",
    inputs=[_source_input("T5"), _quant_input(), _dtype_input()],
    outputs=[Output(T5, "t5")],
)
def load_t5(ctx: NodeContext, source: str, quantization: str, dtype: str) -> tuple[ModelHandle]:
    return (model_handle(ctx, "T5", source, quantization, dtype),)


@node(
    "LoadFluxTransformer",
    category=CATEGORY,
    display_name="Load FLUX Transformer",
    description="The FLUX.1 diffusion transformer, quantized to save memory.",
    inputs=[_source_input("FLUX_MODEL"), _quant_input(), _dtype_input()],
    outputs=[Output(FLUX_MODEL, "model")],
)
def load_flux_transformer(ctx: NodeContext, source: str, quantization: str, dtype: str) -> tuple[ModelHandle]:
    return (model_handle(ctx, "FLUX_MODEL", source, quantization, dtype),)


@node(
    "LoadVAE",
    category=CATEGORY,
    display_name="Load VAE",
    description="The 16-channel FLUX VAE: latents to images and back.",
    inputs=[_source_input("VAE"), _dtype_input()],
    outputs=[Output(VAE, "vae")],
)
def load_vae(ctx: NodeContext, source: str, dtype: str) -> tuple[ModelHandle]:
    return (model_handle(ctx, "VAE", source, q.NONE, dtype),)
