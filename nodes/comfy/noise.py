"""Noise as ComfyUI makes it, so that a seed gives the same image as in ComfyUI.

Read in ComfyUI a125cd8 (comfy/sample.py prepare_noise, comfy_extras/nodes_custom_sampler.py
Noise_RandomNoise/Noise_EmptyNoise, comfy/k_diffusion/sampling.py default_noise_sampler,
BatchedBrownianTree and BrownianTreeNoiseSampler):
- the starting noise is `torch.randn` of the LATENT's shape [B, 16, h, w], in the latent's dtype
  and layout (float32 for EmptySD3LatentImage), from a CPU generator seeded with the seed, before
  any packing; with a `batch_index` every index i gets the i-th [1, 16, h, w] draw of the seed;
- ancestral samplers draw their fresh noise from a second generator seeded with the *same* seed
  on the sampler's device (so on a CPU its first draw repeats the starting noise, and on a GPU
  the draws differ from a CPU's);
- SDE samplers use a torchsde Brownian tree over [sigma_min, sigma_max] seeded with the seed,
  on the CPU (the `_gpu` variants build it on the sampler's device).

ComfyUI seeds the *global* generator (`torch.manual_seed`); a private `torch.Generator` with the
same seed gives the same numbers without touching anyone else's random state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF  # ComfyUI's seed widgets go up to 2^64 - 1, as torch accepts


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    if not -(2**63) <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: it must lie in 0..{MAX_SEED}")
    return torch.Generator(device=device).manual_seed(int(seed))


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """The starting noise for a LATENT's samples (comfy.sample.prepare_noise), on the CPU."""
    generator = _generator(seed)
    options = dict(dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu")
    if batch_index is None:
        return torch.randn(latent.size(), **options)
    indices = [int(i) for i in batch_index]
    if len(indices) != latent.shape[0] or min(indices, default=0) < 0:
        raise ValueError(
            f"batch_index {indices} must give one index >= 0 for each of the latent's "
            f"{latent.shape[0]} images"
        )
    # Draw one image of noise per index up to the largest, keep those asked for.
    draws = {}
    for i in range(max(indices) + 1):
        noise = torch.randn([1, *latent.shape[1:]], **options)
        if i in indices:
            draws[i] = noise
    return torch.cat([draws[i] for i in indices], dim=0)


def empty_noise(latent: torch.Tensor) -> torch.Tensor:
    """DisableNoise / add_noise off: zeros of the latent's shape on the CPU."""
    return torch.zeros(latent.shape, dtype=latent.dtype, layout=latent.layout, device="cpu")


def default_noise_sampler(x: torch.Tensor, seed: int | None) -> NoiseSampler:
    """Fresh standard normal noise shaped like x for every call, from a generator on x's device
    seeded with the sampling seed (unseeded when there is none)."""
    generator = _generator(seed, x.device) if seed is not None else None

    def draw(sigma, sigma_next):
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return draw


class BrownianTreeNoiseSampler:
    """Noise for SDE samplers from a Brownian motion W over sigma (torchsde.BrownianTree),
    normalised to unit variance: (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|).
    Coarse and fine step sizes with the same seed see the same underlying path, which keeps SDE
    samplers' images stable when the step count changes."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int | None, cpu: bool = True):
        import torchsde  # only the SDE samplers need it

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self._flip = 1 if t0 < t1 else -1
        t0, t1 = (t0, t1) if t0 < t1 else (t1, t0)
        w0 = torch.zeros_like(x)
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, ()).item()
        self._cpu = cpu
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self._tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        device, dtype = lo.device, lo.dtype
        if self._cpu:
            lo, hi = lo.detach().cpu().float(), hi.detach().cpu().float()
        with warnings.catch_warnings():
            # torchsde rounds the tree's ends and then warns that a query at sigma_min lies
            # "before" it; it clamps, which is what is wanted.
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            w = self._tree(lo, hi)
        w = w.to(device=device, dtype=dtype) * (self._flip * sign)
        return w / (b - a).abs().sqrt()
