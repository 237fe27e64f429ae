"""LATENT values (ComfyUI's convention: `{"samples": [B, 16, H/8, W/8]}`, unpacked raw VAE
latents; samplers scale them in and out) and EmptyLatent16ch, the blank canvas of a text-to-image
run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from nodes.base import Input, Int, NodeContext, Output, node
from nodes.flux import math as fm
from nodes.flux.types import LATENT

log = logging.getLogger("fluxloom.flux")


@dataclass(frozen=True)
class VAEPosterior:
    """What VAEEncode saw: the encoder's Gaussian (mean, std) and the VAE's scaling, so that the
    sampler can draw the latent from it with its own seed, exactly as FluxImg2ImgPipeline does
    (posterior sample first, then the noise, from one generator)."""

    mean: torch.Tensor
    std: torch.Tensor
    scaling_factor: float
    shift_factor: float

    def cache_size(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.mean, self.std))

    def sample(self, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """mean + std * noise in the encoder's dtype, then scaled as the sampler's latents."""
        mean, std = self.mean.to(device), self.std.to(device)
        x = mean + std * fm.draw_noise(tuple(mean.shape), generator, mean.dtype, device)
        return fm.encode_scale(x, self.scaling_factor, self.shift_factor)


def check_latent(latent, where: str) -> torch.Tensor:
    """The samples of a LATENT, or a clear error saying what is wrong with it."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise ValueError(f"{where}: the latent must be {{'samples': tensor [B, 16, h, w]}}")
    b, c, h, w = samples.shape
    if c != fm.LATENT_CHANNELS:
        raise ValueError(f"{where}: FLUX latents have 16 channels, this one has {c}")
    if h < 2 or w < 2 or h % 2 or w % 2:
        raise ValueError(f"{where}: latent size {h}x{w} must be even (images in multiples of 16 pixels)")
    return samples


@node(
    "EmptyLatent16ch",
    category="flux/latent",
    display_name="Empty Latent (16 ch)",
    description="A blank 16-channel FLUX latent of the given image size: the start of text-to-image.",
    inputs=[
        Input("width", Int(default=1024, min=16, max=8192, step=16)),
        Input("height", Int(default=1024, min=16, max=8192, step=16)),
        Input("batch_size", Int(default=1, min=1, max=64), tooltip="images per run"),
    ],
    outputs=[Output(LATENT, "latent")],
)
def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int) -> tuple[dict]:
    h, w = fm.latent_grid(height, width)
    if (8 * w, 8 * h) != (width, height):  # as FluxPipeline, which warns and sizes down too
        log.warning(
            "EmptyLatent16ch: %dx%d is not a multiple of 16; the image will be %dx%d",
            width,
            height,
            8 * w,
            8 * h,
        )
    return ({"samples": torch.zeros(batch_size, fm.LATENT_CHANNELS, h, w)},)
