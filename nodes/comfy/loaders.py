"""ComfyUI's model loaders, with its class names, inputs and outputs, on fluxloom's model files
and model manager: they output handle bundles (nodes/comfy/values.py), not loaded models, so the
weights load when a sampler or an encoder needs them, within the manager's budgets.

Their combos list what ComfyUI's would (files found by content in ComfyUI's folders, by their
names there) and also fluxloom's diffusers pipelines (a pipeline folder holds every part). A
DualCLIPLoader or CLIPLoader tells CLIP-L from T5 by the file's content, whichever slot it is in.
"""

from __future__ import annotations

import json
from pathlib import Path

from nodes.base import Combo, Float, Input, NodeContext, Output, Socket, node
from nodes.comfy.types import CLIP, MODEL
from nodes.comfy.values import DiffusionModel, TextEncoders
from nodes.flux import catalog
from nodes.flux import quantization as q
from nodes.flux.formats.detect import detect_file
from nodes.flux.handles import ModelHandle
from nodes.flux.loaders import model_handle
from nodes.flux.lora_node import lora_choices, with_lora
from nodes.flux.provider import MODEL_INPUTS, TEXT_ENCODER
from nodes.flux.sources import PARTS, ModelSourceError
from nodes.flux.types import VAE

CATEGORY = "loaders"
# ComfyUI's weight_dtype → fluxloom's quantization: fp8 casts the Linear weights to 8 bits when
# loading (kept 8-bit, cast back per layer at compute), as ComfyUI does.
WEIGHT_DTYPES = {
    "default": q.NONE,
    "fp8_e4m3fn": q.FP8_E4M3,
    "fp8_e4m3fn_fast": q.FP8_E4M3,
    "fp8_e5m2": q.FP8_E5M2,
}
CLIP_TYPES = (
    "stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
    "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux",
)  # fmt: skip
DUAL_CLIP_TYPES = (
    "sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15", "kandinsky5",
    "kandinsky5_image", "ltxv", "newbie", "ace",
)  # fmt: skip
DEVICES = ("default", "cpu")
MAX_STRENGTH = 100.0


def _choices(*kinds: str):
    def choices(env) -> list[str]:
        names: dict[str, None] = {}
        for kind in kinds:
            names.update(dict.fromkeys(catalog.source_choices(env, kind)))
        return list(names)

    return choices


def _checkpoints(env) -> list[str]:
    """All-in-one files, and pipelines (which hold every part too)."""
    return [n for n in catalog.source_choices(env, "FLUX_MODEL") if n in _with_all_parts(env)]


def _with_all_parts(env) -> set[str]:
    kinds = ("FLUX_MODEL", "CLIP", "T5", "VAE")
    return set.intersection(*(set(catalog.source_choices(env, k)) for k in kinds))


# --- diffusion model ------------------------------------------------------------------------------


@node(
    "UNETLoader",
    category="advanced/loaders",
    display_name="Load Diffusion Model",
    description="A FLUX.1 transformer from diffusion_models/ (or unet/): safetensors in BFL's or "
    "diffusers' layout (bf16, fp8, scaled fp8) or GGUF.",
    inputs=[
        Input("unet_name", Combo(choices=_choices("FLUX_MODEL"))),
        Input(
            "weight_dtype",
            Combo(choices=tuple(WEIGHT_DTYPES), default="default"),
            tooltip="fp8: keep the weights 8-bit in memory (half of bf16), cast per layer at compute",
        ),
    ],
    outputs=[Output(MODEL, "MODEL")],
)
def unet_loader(ctx: NodeContext, unet_name: str, weight_dtype: str) -> tuple[DiffusionModel]:
    return (diffusion_model(model_handle(ctx, "FLUX_MODEL", unet_name, WEIGHT_DTYPES[weight_dtype], "auto")),)


def diffusion_model(transformer: ModelHandle) -> DiffusionModel:
    """MODEL for a transformer handle, knowing from its file whether it is a dev (guidance
    embeddings) or a schnell one, so that BasicScheduler need not load it to choose the sigmas."""
    return DiffusionModel(transformer, guidance_embeds=guidance_embeds(Path(transformer.path)))


def guidance_embeds(path: Path) -> bool | None:
    """Whether the FLUX transformer at `path` has a guidance embedding: from a single file's
    tensor names (header only), or from a pipeline folder's transformer/config.json (diffusers'
    default, False, when the key is absent). None when neither says."""
    if path.is_dir():
        config = path / PARTS["FLUX_MODEL"].subfolder / "config.json"
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("guidance_embeds", False))
        except (OSError, ValueError, AttributeError):
            return None
    detected = detect_file(path)
    return detected.guidance if detected is not None else None


# --- text encoders --------------------------------------------------------------------------------


def _encoders(ctx: NodeContext, names: list[str]) -> TextEncoders:
    """CLIP-L and T5 handles from the named sources, told apart by content: a file holds one of
    them; a pipeline or an all-in-one holds both and gives whichever the other names leave."""
    clip_names, t5_names = (set(catalog.source_choices(ctx.env, k)) for k in ("CLIP", "T5"))
    found: dict[str, ModelHandle] = {}
    holding_both = []
    for name in names:
        if name in clip_names and name in t5_names:
            holding_both.append(name)
            continue
        if name not in clip_names and name not in t5_names:
            installed = ", ".join(sorted(clip_names | t5_names)) or "none"
            raise ModelSourceError(f"text encoder {name!r} is not installed (installed: {installed})")
        kind = "CLIP" if name in clip_names else "T5"
        if kind in found:
            raise ValueError(
                f"both text encoders are {'CLIP-L' if kind == 'CLIP' else 'T5'} ({', '.join(names)}); "
                "FLUX needs one CLIP-L (clip_l.safetensors) and one T5 (t5xxl_*.safetensors)"
            )
        found[kind] = model_handle(ctx, kind, name, q.NONE, "auto")
    for name in holding_both:
        for kind in ("CLIP", "T5"):
            if kind not in found:
                found[kind] = model_handle(ctx, kind, name, q.NONE, "auto")
    return TextEncoders(clip_l=found.get("CLIP"), t5=found.get("T5"))


def _check_type(type: str, where: str) -> None:
    if type not in ("flux", "sd3", "stable_diffusion"):
        raise ValueError(
            f"{where}: type {type!r} is not a FLUX text encoder; fluxloom runs FLUX.1 (type 'flux')"
        )


@node(
    "DualCLIPLoader",
    category="advanced/loaders",
    display_name="Load CLIP (Dual)",
    description="FLUX's two text encoders: CLIP-L and T5-XXL (told apart by content, either order).",
    inputs=[
        Input("clip_name1", Combo(choices=_choices("CLIP", "T5"))),
        Input("clip_name2", Combo(choices=_choices("CLIP", "T5"))),
        Input("type", Combo(choices=DUAL_CLIP_TYPES)),
        Input("device", Combo(choices=DEVICES, default="default"), optional=True),
    ],
    outputs=[Output(CLIP, "CLIP")],
)
def dual_clip_loader(
    ctx: NodeContext, clip_name1: str, clip_name2: str, type: str, device: str = "default"
) -> tuple[TextEncoders]:
    _check_type(type, "DualCLIPLoader")
    return (_encoders(ctx, [clip_name1, clip_name2]),)


@node(
    "CLIPLoader",
    category="advanced/loaders",
    display_name="Load CLIP",
    description="One text encoder (CLIP-L or T5-XXL); FLUX needs both, so pair it with another.",
    inputs=[
        Input("clip_name", Combo(choices=_choices("CLIP", "T5"))),
        Input("type", Combo(choices=CLIP_TYPES, default="stable_diffusion")),
        Input("device", Combo(choices=DEVICES, default="default"), optional=True),
    ],
    outputs=[Output(CLIP, "CLIP")],
)
def clip_loader(ctx: NodeContext, clip_name: str, type: str, device: str = "default") -> tuple[TextEncoders]:
    _check_type(type, "CLIPLoader")
    return (_encoders(ctx, [clip_name]),)


# --- VAE, checkpoint, LoRA ----------------------------------------------------------------------


@node(
    "VAELoader",
    category="loaders",
    display_name="Load VAE",
    description="The FLUX VAE (ae.safetensors) from vae/.",
    inputs=[Input("vae_name", Combo(choices=_choices("VAE")))],
    outputs=[Output(VAE, "VAE")],
)
def vae_loader(ctx: NodeContext, vae_name: str) -> tuple[ModelHandle]:
    return (model_handle(ctx, "VAE", vae_name, q.NONE, "auto"),)


@node(
    "CheckpointLoaderSimple",
    category="loaders",
    display_name="Load Checkpoint",
    description="An all-in-one checkpoint (transformer, text encoders and VAE in one file), or a "
    "diffusers pipeline folder.",
    inputs=[Input("ckpt_name", Combo(choices=_checkpoints))],
    outputs=[Output(MODEL, "MODEL"), Output(CLIP, "CLIP"), Output(VAE, "VAE")],
)
def checkpoint_loader(ctx: NodeContext, ckpt_name: str) -> tuple[DiffusionModel, TextEncoders, ModelHandle]:
    model = diffusion_model(model_handle(ctx, "FLUX_MODEL", ckpt_name, q.NONE, "auto"))
    encoders = TextEncoders(
        clip_l=model_handle(ctx, "CLIP", ckpt_name, q.NONE, "auto"),
        t5=model_handle(ctx, "T5", ckpt_name, q.NONE, "auto"),
    )
    return model, encoders, model_handle(ctx, "VAE", ckpt_name, q.NONE, "auto")


def _strength(name: str) -> Input:
    return Input(name, Float(default=1.0, min=-MAX_STRENGTH, max=MAX_STRENGTH, step=0.01))


@node(
    "LoraLoaderModelOnly",
    category="loaders",
    display_name="Load LoRA",
    description="A FLUX LoRA on the diffusion model (kohya, diffusers/PEFT or xlabs layout).",
    inputs=[
        Input("model", Socket(MODEL)),
        Input("lora_name", Combo(choices=lora_choices)),
        _strength("strength_model"),
    ],
    outputs=[Output(MODEL, "MODEL")],
)
def lora_loader_model_only(
    ctx: NodeContext, model: DiffusionModel, lora_name: str, strength_model: float
) -> tuple[DiffusionModel]:
    return (model.with_transformer(with_lora(ctx, model.transformer, lora_name, strength_model)),)


@node(
    "LoraLoader",
    category="loaders",
    display_name="Load LoRA",
    description="A FLUX LoRA on the diffusion model. (Its text-encoder part, if any, is not applied "
    "by fluxloom: the CLIP passes through unchanged.)",
    inputs=[
        Input("model", Socket(MODEL)),
        Input("clip", Socket(CLIP)),
        Input("lora_name", Combo(choices=lora_choices)),
        _strength("strength_model"),
        _strength("strength_clip"),
    ],
    outputs=[Output(MODEL, "MODEL"), Output(CLIP, "CLIP")],
)
def lora_loader(
    ctx: NodeContext,
    model: DiffusionModel,
    clip: TextEncoders,
    lora_name: str,
    strength_model: float,
    strength_clip: float,
) -> tuple[DiffusionModel, TextEncoders]:
    return model.with_transformer(with_lora(ctx, model.transformer, lora_name, strength_model)), clip


# On a machine with only the demo model, ComfyUI's templates (flux1-dev.safetensors, clip_l...,
# t5xxl..., ae...) run with the demo's files, and say so (nodes/flux/provider.py).
MODEL_INPUTS.update(
    {
        ("UNETLoader", "unet_name"): "FLUX_MODEL",
        ("DualCLIPLoader", "clip_name1"): TEXT_ENCODER,
        ("DualCLIPLoader", "clip_name2"): TEXT_ENCODER,
        ("CLIPLoader", "clip_name"): TEXT_ENCODER,
        ("VAELoader", "vae_name"): "VAE",
        ("CheckpointLoaderSimple", "ckpt_name"): "FLUX_MODEL",
        ("LoraLoaderModelOnly", "lora_name"): "LORA",
        ("LoraLoader", "lora_name"): "LORA",
    }
)
