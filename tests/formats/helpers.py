"""Helpers of the single-file format tests: the reference loader, fixed transformer inputs, one
forward pass or the real sampler, PSNR."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nodes.flux import math as fm
from nodes.flux.encode import Conditioning
from nodes.flux.sampler import SamplerSettings, sample
from nodes.flux.sources import load_part

CPU = torch.device("cpu")
FP8 = {"e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def reference(path: Path, kind: str = "FLUX_MODEL", dtype: str = "fp32") -> torch.nn.Module:
    """A part loaded from a diffusers folder the way fluxloom always has (sources.load_part)."""
    return load_part(path, kind, "none", dtype, CPU).module


def inputs(config, dtype: torch.dtype, seed: int = 0, tokens: int = 16, text: int = 8) -> dict:
    """Fixed random transformer inputs for a model with `config`."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, tokens, config.in_channels, generator=g).to(dtype),
        encoder_hidden_states=torch.randn(1, text, config.joint_attention_dim, generator=g).to(dtype),
        pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=g).to(dtype),
        timestep=torch.tensor([0.7], dtype=dtype),
        guidance=torch.tensor([3.5]) if config.guidance_embeds else None,
        txt_ids=torch.zeros(text, 3, dtype=dtype),
        img_ids=fm.latent_image_ids(8, 8, CPU, dtype),
        return_dict=False,
    )


def forward(model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(model.config, dtype))[0]


def sampled(model: torch.nn.Module, dtype: torch.dtype, steps: int = 4) -> torch.Tensor:
    """Latents [1, 16, 8, 8] (a 64x64 image) from the real sampler, with random conditioning."""
    config = model.config
    g = torch.Generator().manual_seed(1)
    cond = Conditioning(
        prompt_embeds=torch.randn(1, 8, config.joint_attention_dim, generator=g).to(dtype),
        pooled_prompt_embeds=torch.randn(1, config.pooled_projection_dim, generator=g).to(dtype),
        text_ids=torch.zeros(8, 3, dtype=dtype),
    )
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    with torch.no_grad():
        return sample(
            model,
            positive=cond,
            latent=latent,
            settings=SamplerSettings(seed=7, steps=steps),
            shift=fm.ShiftConfig(),
            device=CPU,
        )


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference's range."""
    reference, other = reference.float(), other.float()
    mse = torch.mean((reference - other) ** 2).item()
    peak = (reference.max() - reference.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def linears_of(model: torch.nn.Module, cls) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, cls)]
