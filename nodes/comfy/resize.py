"""Resizing [N, C, H, W] tensors as ComfyUI's upscale nodes do (comfy/utils.py common_upscale,
read at a125cd8): an optional centre crop to the new aspect ratio, then one of torch's
interpolation modes, spherical-bilinear `bislerp` (latents) or PIL's Lanczos (images). Shared by
LatentUpscale and ImageScale."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TORCH_MODES = ("nearest-exact", "bilinear", "area", "bicubic")
LATENT_METHODS = (*TORCH_MODES, "bislerp")
IMAGE_METHODS = (*TORCH_MODES, "lanczos")
CROP_METHODS = ("disabled", "center")


def center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The centred part of x with the aspect ratio of width x height (rounded, as ComfyUI's)."""
    old_w, old_h = x.shape[-1], x.shape[-2]
    old_aspect, new_aspect = old_w / old_h, width / height
    dx = dy = 0
    if old_aspect > new_aspect:
        dx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        dy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return x[..., dy : old_h - dy, dx : old_w - dx]


def resize(
    x: torch.Tensor,
    width: int,
    height: int,
    method: str,
    crop: str,
    methods=(*TORCH_MODES, "bislerp", "lanczos"),
) -> torch.Tensor:
    """x [N, C, H, W] resized to [N, C, height, width] by `method` (one of `methods`: what the
    calling node offers), centre-cropped first when crop is "center"."""
    if method not in methods:
        raise ValueError(f"unknown upscale method {method!r}; choose one of {', '.join(methods)}")
    if crop not in CROP_METHODS:
        raise ValueError(f"unknown crop {crop!r}; choose one of {', '.join(CROP_METHODS)}")
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    return F.interpolate(x, size=(height, width), mode=method)


# --- bislerp: bilinear resampling that interpolates each pixel's channel vector spherically ---


def _neighbours(old: int, new: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index along one axis: the two input indices around its source position and the
    weight of the second, placed as bilinear resampling places them (half-pixel centres, clamped
    at the edges)."""
    position = (torch.arange(new, dtype=torch.float32, device=device) + 0.5) * (old / new) - 0.5
    position = position.clamp(0, old - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=old - 1)
    return low, high, position - low


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions of vectors a and b (last axis) by t, with the
    length interpolated linearly. Nearly parallel vectors keep a; nearly opposite ones are
    interpolated linearly (ComfyUI's choices for the two degenerate cases)."""
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(norm_a == 0, 0.0, a / norm_a)
    unit_b = torch.where(norm_b == 0, 0.0, b / norm_b)
    dot = (unit_a * unit_b).sum(dim=-1, keepdim=True)
    omega = dot.clamp(-1.0, 1.0).acos()
    sin_omega = omega.sin()
    direction = ((1 - t) * omega).sin() / sin_omega * unit_a + (t * omega).sin() / sin_omega * unit_b
    out = direction * (norm_a * (1 - t) + norm_b * t)
    out = torch.where(dot > 1 - 1e-5, a, out)
    return torch.where(dot < 1e-5 - 1, a * (1 - t) + b * t, out)


def _bislerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Resample x [N, C, H, W] along dim (-1: width, -2: height) to `size`."""
    low, high, t = _neighbours(x.shape[dim], size, x.device)
    a = x.index_select(dim, low).movedim(1, -1)  # [N, H', W', C]
    b = x.index_select(dim, high).movedim(1, -1)
    t = t.view(1, 1, -1, 1) if dim == -1 else t.view(1, -1, 1, 1)
    return _slerp(a, b, t).movedim(-1, 1)


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Width first, then height, in float32; back in x's dtype."""
    out = _bislerp_axis(_bislerp_axis(x.float(), width, -1), height, -2)
    return out.to(x.dtype)


def lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """PIL's Lanczos on 8-bit images, as ComfyUI does: x (0..1) is truncated to uint8 first, so
    the result has 8-bit steps."""
    images = []
    for image in x:
        array = np.clip(255.0 * image.movedim(0, -1).cpu().float().numpy(), 0, 255).astype(np.uint8)
        single = array.shape[-1] == 1
        pil = Image.fromarray(array[..., 0] if single else array)
        resized = np.array(pil.resize((width, height), resample=Image.Resampling.LANCZOS))
        resized = resized[..., None] if single else resized
        images.append(torch.from_numpy(resized.astype(np.float32) / 255.0).movedim(-1, 0))
    return torch.stack(images).to(device=x.device, dtype=x.dtype)
