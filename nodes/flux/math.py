"""The FLUX.1 sampling maths as small pure functions (k-diffusion style).

Every function here reproduces one step of diffusers 0.42's FluxPipeline / FluxImg2ImgPipeline
with FlowMatchEulerDiscreteScheduler, cast for cast and in the same order of operations, so that
fluxloom's output equals diffusers' bit for bit (`torch.equal`). Where an operation looks
redundant (a float32 round trip, a 0-d tensor instead of a Python float), it is there because
diffusers does it and the last bit depends on it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

LATENT_CHANNELS = 16  # FLUX.1's VAE latent channels
# FLUX.1's VAE latent format (its config's scaling_factor and shift_factor; ComfyUI's too): a LATENT
# holds raw VAE latents, as in ComfyUI, and the samplers scale them on the way in and out.
LATENT_SCALE = 0.3611
LATENT_SHIFT = 0.1159
VAE_SCALE = 8  # pixels per latent cell
PATCH = 2  # latents are packed in 2x2 patches, so images are multiples of 16 pixels


@dataclass(frozen=True)
class ShiftConfig:
    """The scheduler settings that shape the sigma schedule. Defaults are FLUX.1-dev's
    scheduler_config.json (schnell's differs: no dynamic shifting, shift 1.0)."""

    num_train_timesteps: int = 1000
    shift: float = 3.0
    use_dynamic_shifting: bool = True
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096

    @classmethod
    def from_file(cls, path: Path) -> ShiftConfig:
        """Read a diffusers scheduler_config.json; unknown keys are ignored, missing ones keep
        their FLUX.1-dev defaults."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            values = {f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None}
            for name, value in values.items():  # a string here would fail deep in the maths
                if not isinstance(value, (int, float)):
                    raise ValueError(f"{name} is {value!r}, not a number")
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the scheduler config {path}: {exc}") from exc
        return cls(**values)

    @classmethod
    def for_pipeline(cls, folder: Path | str) -> ShiftConfig:
        """The config of a diffusers pipeline folder (scheduler/scheduler_config.json), or the
        FLUX.1-dev defaults when the folder has none."""
        path = Path(folder) / "scheduler" / "scheduler_config.json"
        return cls.from_file(path) if path.is_file() else cls()

    @classmethod
    def for_model(cls, path: Path | str, guidance_embeds: bool) -> ShiftConfig:
        """The schedule of a loaded transformer: its pipeline's scheduler config, or for a single
        file (which has none) FLUX.1-dev's or -schnell's published one, by whether the model has
        a guidance embedding (dev) or not (schnell)."""
        if Path(path).is_dir():
            return cls.for_pipeline(path)
        from nodes.flux.assets import config_dir

        return cls.for_pipeline(config_dir("flux1-dev" if guidance_embeds else "flux1-schnell"))


# --- schedule -------------------------------------------------------------------------------


def calculate_mu(image_seq_len: int, shift: ShiftConfig) -> float:
    """Resolution-dependent shift: linear in the number of image tokens between
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift)."""
    m = (shift.max_shift - shift.base_shift) / (shift.max_image_seq_len - shift.base_image_seq_len)
    b = shift.base_shift - m * shift.base_image_seq_len
    return image_seq_len * m + b


def time_shift(mu: float, sigmas: np.ndarray, power: float = 1.0) -> np.ndarray:
    """exp(mu) / (exp(mu) + (1/s - 1)^power), evaluated in the array's dtype (float32)."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** power)


def flux_sigmas(
    steps: int, mu: float, shift: ShiftConfig, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The `steps + 1` sigmas of a FLUX run, from 1 down to a final 0, as float32 on `device`.

    np.linspace in float64 is cast to float32 *before* the shift, and the shift runs in numpy
    float32, exactly as FlowMatchEulerDiscreteScheduler.set_timesteps does with custom sigmas."""
    sigmas = np.linspace(1.0, 1 / steps, steps).astype(np.float32)
    if shift.use_dynamic_shifting:
        sigmas = time_shift(mu, sigmas)
    else:
        sigmas = shift.shift * sigmas / (1 + (shift.shift - 1) * sigmas)
    shifted = torch.from_numpy(np.asarray(sigmas)).to(dtype=torch.float32, device=device)
    return torch.cat([shifted, torch.zeros(1, device=shifted.device)])


def sigmas_to_timesteps(sigmas: torch.Tensor, shift: ShiftConfig) -> torch.Tensor:
    """The model's timesteps (0..1000) for every sigma but the final 0."""
    return sigmas[:-1] * shift.num_train_timesteps


def img2img_start(steps: int, denoise: float) -> int:
    """Index of the first step run when only `denoise` of the schedule is sampled
    (FluxImg2ImgPipeline.get_timesteps with strength = denoise)."""
    init_timestep = min(steps * denoise, steps)
    return int(max(steps - init_timestep, 0))


# --- latents --------------------------------------------------------------------------------


def latent_grid(height: int, width: int) -> tuple[int, int]:
    """Latent height and width for an image size: even, so that 2x2 patches tile it."""
    return 2 * (int(height) // (VAE_SCALE * PATCH)), 2 * (int(width) // (VAE_SCALE * PATCH))


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] → [B, (h/2)(w/2), 4C]: each 2x2 patch becomes one token."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // 2, 2, w // 2, 2)
    latents = latents.permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(latents: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, (h/2)(w/2), 4C] → [B, C, h, w], the inverse of pack_latents."""
    b, _, channels = latents.shape
    latents = latents.view(b, h // 2, w // 2, channels // 4, 2, 2)
    latents = latents.permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, channels // 4, h, w)


def latent_image_ids(h: int, w: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """[(h/2)(w/2), 3] position ids of the packed tokens: row in column 1, column in column 2."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // 2)[None, :]
    return ids.reshape((h // 2) * (w // 2), 3).to(device=device, dtype=dtype)


def text_ids(seq_len: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Text tokens all sit at position 0."""
    return torch.zeros(seq_len, 3).to(device=device, dtype=dtype)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator, as FLUX examples use: the same seed gives the same image on any device."""
    return torch.Generator("cpu").manual_seed(int(seed))


def draw_noise(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in `dtype`, then moved (diffusers' randn_tensor)."""
    return torch.randn(shape, generator=generator, device="cpu", dtype=dtype).to(device)


def scale_noise(sample: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, index: int) -> torch.Tensor:
    """Flow-matching forward process at sigmas[index]: sigma * noise + (1 - sigma) * sample,
    with the sigmas first cast to the sample's dtype (as the scheduler's scale_noise does)."""
    sigma = sigmas.to(device=sample.device, dtype=sample.dtype)[index].reshape(1, *([1] * (sample.ndim - 1)))
    return sigma * noise + (1.0 - sigma) * sample


# --- one step -------------------------------------------------------------------------------


def model_timestep(sigma_t: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The transformer's timestep input: the schedule's timestep (0..1000) expanded to the batch,
    cast to the latents' dtype, then divided by 1000 in that dtype."""
    return sigma_t.expand(batch).to(dtype) / 1000


def guidance_vector(guidance: float, batch: int, device: torch.device | str) -> torch.Tensor:
    """FLUX.1-dev's distilled guidance input: float32 whatever the model dtype."""
    return torch.full([1], guidance, device=device, dtype=torch.float32).expand(batch)


def true_cfg(pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Classic classifier-free guidance with a real negative prompt."""
    return neg + scale * (pos - neg)


def euler_step(latents: torch.Tensor, pred: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor):
    """One flow-matching Euler step. The latents are upcast to float32, while the 0-d sigma
    difference times the prediction stays in the prediction's dtype (0-d tensors do not promote);
    the result is cast back to the prediction's dtype."""
    return (latents.float() + (sigma_next - sigma) * pred).to(pred.dtype)


def decode_scale(
    latents: torch.Tensor, scaling_factor: float = LATENT_SCALE, shift_factor: float = LATENT_SHIFT
) -> torch.Tensor:
    """Latents as the sampler sees them → raw VAE latents (what the decoder takes, and what a
    LATENT holds)."""
    return latents / scaling_factor + shift_factor


def encode_scale(
    latents: torch.Tensor, scaling_factor: float = LATENT_SCALE, shift_factor: float = LATENT_SHIFT
) -> torch.Tensor:
    """Raw VAE latents (what the encoder gives, what a LATENT holds) → latents as the sampler
    sees them."""
    return (latents - shift_factor) * scaling_factor


def to_unit_range(decoded: torch.Tensor) -> torch.Tensor:
    """VAE output in -1..1 → image in 0..1 (diffusers' VaeImageProcessor.denormalize)."""
    return (decoded * 0.5 + 0.5).clamp(0, 1)


def to_signed_range(images: torch.Tensor) -> torch.Tensor:
    """Image in 0..1 → VAE input in -1..1 (VaeImageProcessor.normalize)."""
    return 2.0 * images - 1.0
