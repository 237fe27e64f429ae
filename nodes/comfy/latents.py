"""ComfyUI's latent nodes for FLUX: EmptySD3LatentImage (16 channels), EmptyLatentImage (4
channels, as in ComfyUI: samplers widen an all-zero latent to the model's 16), LatentUpscale.

A LATENT is `{"samples": raw VAE latents [B, C, h, w], ...}` in both vocabularies. ComfyUI keeps
a latent's other keys (batch_index, ...) through its nodes; so do these, except VAEEncode's
`posterior`, which describes the samples it came with and is dropped once they change.
"""

from __future__ import annotations

import torch

from nodes.base import Combo, Input, Int, NodeContext, Output, Socket, node
from nodes.comfy import resize
from nodes.flux import math as fm
from nodes.flux.types import LATENT

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION
SD_LATENT_CHANNELS = 4  # EmptyLatentImage's (SD1.x/SDXL) latent channels


def latent_samples(latent, where: str) -> torch.Tensor:
    """A LATENT's samples [B, C, h, w], or a clear error naming the node."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise ValueError(f"{where}: the latent must be {{'samples': tensor [B, C, h, w]}}")
    return samples


def with_samples(latent: dict, samples: torch.Tensor) -> dict:
    """A copy of a LATENT with new samples (its other keys kept, the stale posterior dropped)."""
    out = {key: value for key, value in latent.items() if key != "posterior"}
    out["samples"] = samples
    return out


def _empty(width: int, height: int, batch_size: int, channels: int) -> dict:
    return {"samples": torch.zeros([batch_size, channels, height // 8, width // 8])}


@node(
    "EmptySD3LatentImage",
    category="latent/sd3",
    display_name="EmptySD3LatentImage",
    description="A blank 16-channel latent (SD3 and FLUX) of the given image size.",
    inputs=[
        Input("width", Int(default=1024, min=16, max=MAX_RESOLUTION, step=16)),
        Input("height", Int(default=1024, min=16, max=MAX_RESOLUTION, step=16)),
        Input("batch_size", Int(default=1, min=1, max=4096)),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def empty_sd3_latent_image(ctx: NodeContext, width: int, height: int, batch_size: int) -> tuple[dict]:
    return (_empty(width, height, batch_size, fm.LATENT_CHANNELS),)


@node(
    "EmptyLatentImage",
    category="latent",
    display_name="Empty Latent Image",
    description=(
        "Create a new batch of empty latent images to be denoised via sampling. It has SD's 4 "
        "channels, as in ComfyUI; a FLUX sampler replaces an empty latent by 16 channels of zeros."
    ),
    inputs=[
        Input("width", Int(default=512, min=16, max=MAX_RESOLUTION, step=8), tooltip="in pixels"),
        Input("height", Int(default=512, min=16, max=MAX_RESOLUTION, step=8), tooltip="in pixels"),
        Input("batch_size", Int(default=1, min=1, max=4096), tooltip="latent images in the batch"),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def empty_latent_image(ctx: NodeContext, width: int, height: int, batch_size: int) -> tuple[dict]:
    return (_empty(width, height, batch_size, SD_LATENT_CHANNELS),)


def upscale_size(h: int, w: int, width: int, height: int) -> tuple[int, int]:
    """LatentUpscale's target latent size (h, w) for a latent of h x w cells and a pixel size where
    0 keeps the aspect ratio; ComfyUI never goes below 64 pixels."""
    if width == 0:
        height = max(64, height)
        width = max(64, round(w * height / h))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(h * width / w))
    else:
        width, height = max(64, width), max(64, height)
    return height // 8, width // 8


@node(
    "LatentUpscale",
    category="latent",
    display_name="Upscale Latent",
    description=(
        "Resize a latent to an image size in pixels (0 for width or height keeps the aspect "
        "ratio; both 0 leaves the latent as it is)."
    ),
    inputs=[
        Input("samples", Socket(LATENT)),
        Input("upscale_method", Combo(resize.LATENT_METHODS)),
        Input("width", Int(default=512, min=0, max=MAX_RESOLUTION, step=8)),
        Input("height", Int(default=512, min=0, max=MAX_RESOLUTION, step=8)),
        Input("crop", Combo(resize.CROP_METHODS)),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def latent_upscale(
    ctx: NodeContext, samples: dict, upscale_method: str, width: int, height: int, crop: str
) -> tuple[dict]:
    x = latent_samples(samples, "LatentUpscale")
    if width == 0 and height == 0:
        return (samples,)
    h, w = upscale_size(x.shape[-2], x.shape[-1], width, height)
    try:
        scaled = resize.resize(x, w, h, upscale_method, crop, resize.LATENT_METHODS)
    except ValueError as exc:
        raise ValueError(f"LatentUpscale: {exc}") from exc
    return (with_samples(samples, scaled),)
