"""FLUX's flow-matching "model sampling" as ComfyUI defines it, and how one transformer call maps to it.

ComfyUI (comfy/model_sampling.py, comfy/supported_models.py, comfy_extras/nodes_model_advanced.py,
read at a125cd8) describes a model's noise levels with two objects:
- the sigma table: FLUX.1-dev uses `ModelSamplingFlux`, 10000 timesteps t = k/10000 mapped through
  FLUX's time shift `sigma(t) = e^mu / (e^mu + 1/t - 1)` with mu = 1.15 unless a ModelSamplingFlux
  node sets it from the resolution; FLUX.1-schnell uses `ModelSamplingDiscreteFlow` with shift 1.0
  and multiplier 1.0, i.e. 1000 timesteps and sigma = t.
- the prediction type `CONST` (rectified flow): x_sigma = sigma * noise + (1 - sigma) * x0, the
  model predicts the velocity v = noise - x0, and denoised = x - sigma * v.

Schedulers read only the table (sigma_min, sigma_max, sigmas, sigma(), timestep(),
percent_to_sigma()); samplers only the CONST formulas below. Everything is computed in float32 with
the same expressions, so that the sigmas equal ComfyUI's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from nodes.flux import math as fm

FLUX_DEV_SHIFT = 1.15  # ModelSamplingFlux's default: FLUX.1-dev's mu when nothing sets it
FLUX_SCHNELL_SHIFT = 1.0  # FLUX.1-schnell: ModelSamplingDiscreteFlow(shift=1, multiplier=1)

# ComfyUI's latent_formats.Flux: a LATENT holds raw VAE latents, the model sees them scaled.
LATENT_SCALE = fm.LATENT_SCALE
LATENT_SHIFT = fm.LATENT_SHIFT


def flux_time_shift(mu: float, t):
    """FLUX's resolution-dependent time shift (Esser et al. 2024, SD3 paper, eq. 23, in BFL's
    exponential form): e^mu / (e^mu + (1/t - 1))."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def sd3_time_shift(alpha: float, t):
    """SD3's timestep shift alpha*t / (1 + (alpha - 1)*t) (ModelSamplingDiscreteFlow); identity at 1."""
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


def shift_for_resolution(max_shift: float, base_shift: float, width: int, height: int) -> float:
    """The ModelSamplingFlux node's mu: linear in the number of 2x2 latent patches,
    (256 patches, base_shift) to (4096 patches, max_shift), from width*height/(8*8*2*2)
    without rounding the size to a multiple of 16."""
    x1, x2 = 256, 4096
    slope = (max_shift - base_shift) / (x2 - x1)
    return (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * x1)


@dataclass
class FluxModelSampling:
    """ComfyUI's ModelSamplingFlux: FLUX.1-dev's sigma table (and anything a ModelSamplingFlux
    node patches, schnell included)."""

    shift: float = FLUX_DEV_SHIFT
    timesteps: int = 10000
    sigmas: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self.sigmas = self.sigma(torch.arange(1, self.timesteps + 1, 1) / self.timesteps)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma):
        """FLUX is conditioned on sigma itself (the transformer scales it by 1000 inside)."""
        return sigma

    def sigma(self, timestep):
        return flux_time_shift(self.shift, timestep)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return flux_time_shift(self.shift, 1.0 - percent)


@dataclass
class DiscreteFlowModelSampling:
    """ComfyUI's ModelSamplingDiscreteFlow, which FLUX.1-schnell uses (shift 1, multiplier 1):
    1000 timesteps t = k/1000, sigma = shift(t)."""

    shift: float = FLUX_SCHNELL_SHIFT
    multiplier: float = 1.0
    timesteps: int = 1000
    sigmas: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        t = torch.arange(1, self.timesteps + 1, 1) / self.timesteps
        self.sigmas = self.sigma(t * self.multiplier)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return sd3_time_shift(self.shift, timestep / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return sd3_time_shift(self.shift, 1.0 - percent)


ModelSampling = FluxModelSampling | DiscreteFlowModelSampling


def flux_dev(shift: float = FLUX_DEV_SHIFT) -> FluxModelSampling:
    return FluxModelSampling(shift=shift)


def flux_schnell() -> DiscreteFlowModelSampling:
    return DiscreteFlowModelSampling()


def model_sampling_flux(max_shift: float, base_shift: float, width: int, height: int) -> FluxModelSampling:
    """What a ModelSamplingFlux node puts on the model (for dev and schnell alike)."""
    return FluxModelSampling(shift=shift_for_resolution(max_shift, base_shift, width, height))


# --- CONST (rectified flow) prediction ------------------------------------------------------


def _per_sample(sigma: torch.Tensor | float, ndim: int):
    """A 0-d/1-element sigma stays a scalar, a per-sample sigma [B] broadcasts over [B, ...]."""
    if not isinstance(sigma, torch.Tensor) or sigma.numel() == 1:
        return sigma.reshape(()) if isinstance(sigma, torch.Tensor) else sigma
    return sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


def to_denoised(x: torch.Tensor, velocity: torch.Tensor, sigma) -> torch.Tensor:
    """x0 estimate from the velocity: x - sigma * v (CONST.calculate_denoised)."""
    return x - velocity * _per_sample(sigma, velocity.ndim)


def noise_scaling(sigma, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """The forward process at sigma: sigma * noise + (1 - sigma) * latent (CONST.noise_scaling)."""
    sigma = _per_sample(sigma, noise.ndim)
    return sigma * noise + (1.0 - sigma) * latent


def inverse_noise_scaling(sigma, latent: torch.Tensor) -> torch.Tensor:
    """What ComfyUI does to the sampler's result: latent / (1 - last sigma); a no-op at 0."""
    return latent / (1.0 - _per_sample(sigma, latent.ndim))


def latent_in(latent: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent → what the model samples (latent_formats.Flux.process_in)."""
    return (latent - LATENT_SHIFT) * LATENT_SCALE


def latent_out(latent: torch.Tensor) -> torch.Tensor:
    """What the model sampled → raw VAE latent (latent_formats.Flux.process_out)."""
    return latent / LATENT_SCALE + LATENT_SHIFT


# --- one transformer call -------------------------------------------------------------------


def transformer_timestep(sigma: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The diffusers FluxTransformer2DModel's `timestep` input for a sigma.

    ComfyUI hands FLUX sigma in float32 and its model multiplies by 1000; diffusers' transformer
    also multiplies by 1000 inside, but FluxPipeline (and so FluxSampler) first forms the timestep
    sigma * 1000, casts it to the latents' dtype and divides by 1000. We take FluxSampler's path,
    so that both samplers feed the transformer the same bits; against ComfyUI the round trip can
    move the timestep by one float32 ulp (and bf16 rounds it as diffusers does)."""
    return fm.model_timestep(sigma * 1000, batch, dtype)


def flux_velocity(
    transformer: torch.nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor,
    *,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    txt_ids: torch.Tensor,
    guidance: float | None = None,
) -> torch.Tensor:
    """One diffusers FLUX transformer call on unpacked latents [B, 16, h, w]: packs 2x2 patches,
    runs the model in its dtype (the embeddings' dtype, already on the latents' device and
    repeated to their batch) and returns the unpacked velocity in that dtype. `guidance` is used
    only by transformers with guidance embeddings (dev)."""
    b, _, h, w = x.shape
    dtype = prompt_embeds.dtype
    packed = fm.pack_latents(x.to(dtype))
    if sigma.numel() == 1:
        sigma = sigma.reshape(()).expand(b)
    use_guidance = transformer.config.guidance_embeds and guidance is not None
    out = transformer(
        hidden_states=packed,
        timestep=transformer_timestep(sigma, b, dtype),
        guidance=fm.guidance_vector(guidance, b, x.device) if use_guidance else None,
        pooled_projections=pooled_prompt_embeds,
        encoder_hidden_states=prompt_embeds,
        txt_ids=txt_ids,
        img_ids=fm.latent_image_ids(h, w, x.device, dtype),
        joint_attention_kwargs={},
        return_dict=False,
    )[0]
    return fm.unpack_latents(out, h, w)
