"""ComfyUI's resize-by-factor nodes and ImageInvert: LatentUpscaleBy, ImageScaleBy,
ImageScaleToTotalPixels (a size in megapixels), ImageInvert. Inputs, defaults and rounding as
ComfyUI's nodes.py and comfy_extras/nodes_post_processing.py (a125cd8; ImageScaleToTotalPixels'
`resolution_steps`, which the template package's workflows carry, rounds each side to a multiple of
it): the new size is the old one times the factor, rounded, never cropped; the methods are
LatentUpscale's and ImageScale's."""

from __future__ import annotations

import math

import torch

from nodes.base import Combo, Float, Input, Int, NodeContext, Output, Socket, node
from nodes.comfy import resize
from nodes.comfy.latents import latent_samples, with_samples
from nodes.flux.types import LATENT
from nodes.image import IMAGE, check_image_tensor


def _resized(x: torch.Tensor, width: int, height: int, method: str, methods, where: str, what: str):
    """x [B, C, H, W] at width x height, uncropped, or an error naming the node; `what`: "image"
    (sized in pixels) or "latent" (in cells)."""
    if width < 1 or height < 1:
        unit = "pixels" if what == "image" else "cells"
        raise ValueError(f"{where}: the {what} would be {width}x{height} {unit}; choose a larger factor")
    try:
        return resize.resize(x, width, height, method, "disabled", methods)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _scaled_image(image: torch.Tensor, width: int, height: int, method: str, where: str) -> torch.Tensor:
    check_image_tensor(image, where)
    scaled = _resized(image.movedim(-1, 1), width, height, method, resize.IMAGE_METHODS, where, "image")
    return scaled.movedim(1, -1).contiguous()


@node(
    "LatentUpscaleBy",
    category="latent",
    display_name="Upscale Latent By",
    description="Resize a latent by a factor (each side times scale_by, rounded).",
    inputs=[
        Input("samples", Socket(LATENT)),
        Input("upscale_method", Combo(resize.LATENT_METHODS)),
        Input("scale_by", Float(default=1.5, min=0.01, max=8.0, step=0.01)),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def latent_upscale_by(ctx: NodeContext, samples: dict, upscale_method: str, scale_by: float) -> tuple[dict]:
    x = latent_samples(samples, "LatentUpscaleBy")
    w, h = round(x.shape[-1] * scale_by), round(x.shape[-2] * scale_by)
    scaled = _resized(x, w, h, upscale_method, resize.LATENT_METHODS, "LatentUpscaleBy", "latent")
    return (with_samples(samples, scaled),)


@node(
    "ImageScaleBy",
    category="image/upscaling",
    display_name="Upscale Image By",
    description="Resize images by a factor (each side times scale_by, rounded).",
    inputs=[
        Input("image", Socket(IMAGE)),
        Input("upscale_method", Combo(resize.IMAGE_METHODS)),
        Input("scale_by", Float(default=1.0, min=0.01, max=8.0, step=0.01)),
    ],
    outputs=[Output(IMAGE, "IMAGE")],
)
def image_scale_by(ctx: NodeContext, image: torch.Tensor, upscale_method: str, scale_by: float):
    check_image_tensor(image, "ImageScaleBy")
    width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
    return (_scaled_image(image, width, height, upscale_method, "ImageScaleBy"),)


@node(
    "ImageScaleToTotalPixels",
    category="image/upscaling",
    display_name="Scale Image to Total Pixels",
    description=(
        "Resize images to about a number of megapixels (1 = 1024x1024), keeping their aspect ratio; "
        "each side rounded to a multiple of resolution_steps."
    ),
    inputs=[
        Input("image", Socket(IMAGE)),
        Input("upscale_method", Combo(resize.IMAGE_METHODS)),
        Input("megapixels", Float(default=1.0, min=0.01, max=16.0, step=0.01)),
        Input("resolution_steps", Int(default=1, min=1, max=256)),
    ],
    outputs=[Output(IMAGE, "IMAGE")],
)
def image_scale_to_total_pixels(
    ctx: NodeContext, image: torch.Tensor, upscale_method: str, megapixels: float, resolution_steps: int = 1
):
    check_image_tensor(image, "ImageScaleToTotalPixels")
    h, w = image.shape[1], image.shape[2]
    factor = math.sqrt(int(megapixels * 1024 * 1024) / (w * h))
    width = round(w * factor / resolution_steps) * resolution_steps
    height = round(h * factor / resolution_steps) * resolution_steps
    return (_scaled_image(image, width, height, upscale_method, "ImageScaleToTotalPixels"),)


@node(
    "ImageInvert",
    category="image",
    display_name="Invert Image",
    description="1 - each pixel value.",
    inputs=[Input("image", Socket(IMAGE))],
    outputs=[Output(IMAGE, "IMAGE")],
)
def image_invert(ctx: NodeContext, image: torch.Tensor) -> tuple[torch.Tensor]:
    check_image_tensor(image, "ImageInvert")
    return (1.0 - image,)
