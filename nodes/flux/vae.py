"""VAEDecode and VAEEncode: FLUX latents ↔ images ([B, H, W, C] floats in 0..1).

Both follow diffusers' FLUX pipelines step for step (scaling and shift from the VAE's config,
VaeImageProcessor's normalisation and resizing), so that decoded images equal the pipeline's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.base import Input, NodeContext, Output, Socket, node
from nodes.flux import math as fm
from nodes.flux.latent import VAEPosterior, check_latent
from nodes.flux.types import LATENT, VAE
from nodes.image import IMAGE, check_image_tensor

SIZE_MULTIPLE = fm.VAE_SCALE * fm.PATCH  # 16 pixels: one packed latent token


def vae_factors(vae) -> tuple[float, float]:
    config = vae.config
    shift = getattr(config, "shift_factor", None)
    return float(config.scaling_factor), float(shift) if shift is not None else 0.0


def decode(loaded, samples: torch.Tensor) -> torch.Tensor:
    """Raw latents [B, 16, h, w] (a LATENT's samples) → IMAGE [B, 8h, 8w, 3] float32 in 0..1 on
    the CPU. The sampler already undid its scaling (as FluxPipeline does just before decoding)."""
    vae = loaded.module
    z = samples.to(loaded.device)
    if z.dtype != vae.dtype:  # e.g. bf16 latents into an fp32 VAE; diffusers would fail here
        z = z.to(vae.dtype)
    decoded = vae.decode(z, return_dict=False)[0]
    return fm.to_unit_range(decoded).cpu().permute(0, 2, 3, 1).float().contiguous()


def check_image(image, where: str) -> torch.Tensor:
    check_image_tensor(image, where)
    if image.shape[1] < SIZE_MULTIPLE or image.shape[2] < SIZE_MULTIPLE:
        raise ValueError(
            f"{where}: the image is {image.shape[2]}x{image.shape[1]}; FLUX needs at least 16x16"
        )
    return image


def vae_input(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] → VAE input [B, 3, H', W'] in -1..1, as VaeImageProcessor.preprocess:
    the channels-first view (same strides as its numpy transpose), sizes floored to multiples of
    16 with nearest-neighbour resizing when needed, then 2x - 1."""
    x = image[..., :3].permute(0, 3, 1, 2)
    if x.shape[1] == 1:  # a grayscale IMAGE: the VAE takes RGB, as LoadImage makes it
        x = x.expand(-1, 3, -1, -1)
    height, width = (n - n % SIZE_MULTIPLE for n in x.shape[2:])
    if (height, width) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=(height, width))
    return fm.to_signed_range(x).to(dtype=torch.float32)


def encode(loaded, image: torch.Tensor) -> dict:
    """IMAGE → LATENT: the raw latents (the encoder's mean, as ComfyUI's VAEEncode gives them),
    with the encoder's posterior kept so that FluxSampler samples it as FluxImg2ImgPipeline does."""
    vae = loaded.module
    scaling, shift = vae_factors(vae)
    x = vae_input(image).to(device=loaded.device, dtype=vae.dtype)
    dist = vae.encode(x).latent_dist
    posterior = VAEPosterior(dist.mean.cpu(), dist.std.cpu(), scaling, shift)
    return {"samples": dist.mean.cpu(), "posterior": posterior}


@node(
    "VAEDecode",
    category="latent",
    display_name="VAE Decode",
    description="Turn a latent into an image.",
    inputs=[Input("samples", Socket(LATENT), aliases=("latent",)), Input("vae", Socket(VAE))],
    outputs=[Output(IMAGE, "IMAGE")],
)
def vae_decode(ctx: NodeContext, samples: dict, vae) -> tuple[torch.Tensor]:
    raw = check_latent(samples, "VAEDecode")
    with torch.no_grad(), ctx.models.use(vae) as loaded:
        return (decode(loaded, raw),)


@node(
    "VAEEncode",
    category="latent",
    display_name="VAE Encode",
    description="Turn an image into a latent (for image-to-image: a sampler with denoise < 1).",
    inputs=[Input("pixels", Socket(IMAGE), aliases=("image",)), Input("vae", Socket(VAE))],
    outputs=[Output(LATENT, "LATENT")],
)
def vae_encode(ctx: NodeContext, pixels: torch.Tensor, vae) -> tuple[dict]:
    check_image(pixels, "VAEEncode")
    with torch.no_grad(), ctx.models.use(vae) as loaded:
        return (encode(loaded, pixels),)
