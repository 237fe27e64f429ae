"""ComfyUI's ImageScale ("Upscale Image"): resize an IMAGE [B, H, W, C] to a size in pixels."""

from __future__ import annotations

import torch

from nodes.base import Combo, Input, Int, NodeContext, Output, Socket, node
from nodes.comfy import resize
from nodes.comfy.latents import MAX_RESOLUTION
from nodes.image import IMAGE, check_image_tensor


def scale_size(h: int, w: int, width: int, height: int) -> tuple[int, int]:
    """ImageScale's target (height, width): a 0 side keeps the aspect ratio (at least 1 pixel)."""
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    return height, width


@node(
    "ImageScale",
    category="image/upscaling",
    display_name="Upscale Image",
    description=(
        "Resize images to a size in pixels (0 for width or height keeps the aspect ratio; both 0 "
        "leaves them as they are). lanczos works on 8-bit values, as in ComfyUI."
    ),
    inputs=[
        Input("image", Socket(IMAGE)),
        Input("upscale_method", Combo(resize.IMAGE_METHODS)),
        Input("width", Int(default=512, min=0, max=MAX_RESOLUTION, step=1)),
        Input("height", Int(default=512, min=0, max=MAX_RESOLUTION, step=1)),
        Input("crop", Combo(resize.CROP_METHODS)),
    ],
    outputs=[Output(IMAGE, "IMAGE")],
)
def image_scale(
    ctx: NodeContext, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
) -> tuple[torch.Tensor]:
    check_image_tensor(image, "ImageScale")
    if width == 0 and height == 0:
        return (image,)
    height, width = scale_size(image.shape[1], image.shape[2], width, height)
    try:
        scaled = resize.resize(
            image.movedim(-1, 1), width, height, upscale_method, crop, resize.IMAGE_METHODS
        )
    except ValueError as exc:
        raise ValueError(f"ImageScale: {exc}") from exc
    return (scaled.movedim(1, -1).contiguous(),)
