"""ComfyUI's schedulers: `scheduler(model_sampling, steps) -> sigmas`, from sigma_max down to a final 0.

Each one follows ComfyUI's comfy/samplers.py and comfy/k_diffusion/sampling.py (a125cd8), read for
behaviour and written again here, including their quirks on flow models: `normal` and
`sgm_uniform` space *timesteps* evenly between timestep(sigma_max) and timestep(sigma_min) and map
them through sigma(), and FLUX's timestep(sigma) is sigma itself, so the last sigma is the shift
applied twice to 1e-4; `ddim_uniform` never reaches sigma_max. `scheduler_sigmas` adds what the
BasicScheduler node does with `denoise`, `ksampler_sigmas` what KSampler does (plus the samplers
that drop the penultimate sigma), `advanced_sigmas` what KSamplerAdvanced's step range does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from nodes.comfy.model_sampling import ModelSampling


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def simple(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Uniform in timestep: every (len(table)/steps)-th entry of the sigma table, from the top."""
    stride = len(ms.sigmas) / steps
    sigmas = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.FloatTensor(sigmas + [0.0])


def ddim_uniform(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Every (len(table)//steps)-th entry from the table's second entry upwards, reversed, with a
    final 0 (unless the table's second entry is already ~0, when one more step replaces it)."""
    first = 1
    if math.isclose(float(ms.sigmas[first]), 0, abs_tol=0.00001):
        steps += 1
        sigmas = []
    else:
        sigmas = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    sigmas += [float(ms.sigmas[i]) for i in range(first, len(ms.sigmas), stride)]
    return torch.FloatTensor(sigmas[::-1])


def normal(ms: ModelSampling, steps: int, sgm: bool = False) -> torch.Tensor:
    """Timesteps spaced evenly from timestep(sigma_max) to timestep(sigma_min), mapped by sigma();
    `sgm` (sgm_uniform) spaces steps + 1 of them and drops the last, as SGM/SDXL-Turbo do."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigmas = [float(ms.sigma(t)) for t in timesteps]
    return torch.FloatTensor(sigmas + ([0.0] if append_zero else []))


def sgm_uniform(ms: ModelSampling, steps: int) -> torch.Tensor:
    return normal(ms, steps, sgm=True)


def karras(ms: ModelSampling, steps: int, rho: float = 7.0) -> torch.Tensor:
    return karras_range(steps, float(ms.sigma_min), float(ms.sigma_max), rho)


def karras_range(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 ("Elucidating the Design Space...") eq. 5: sigma_i =
    (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(ms: ModelSampling, steps: int) -> torch.Tensor:
    return exponential_range(steps, float(ms.sigma_min), float(ms.sigma_max))


def exponential_range(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log sigma from sigma_max to sigma_min (k-diffusion's get_sigmas_exponential)."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def polyexponential_range(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """A polynomial ramp in log sigma (k-diffusion's get_sigmas_polyexponential): log sigma_i =
    log sigma_min + (1 - i/(n-1))^rho * (log sigma_max - log sigma_min); rho 1 is exponential."""
    ramp = torch.linspace(1, 0, steps) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def laplace_range(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta_: float = 0.5):
    """Hang et al. 2024 ("Improved Noise Schedule for Diffusion Training"): log sigma follows the
    quantiles of a Laplace(mu, beta) distribution, lambda(x) = mu - beta * sign(1/2 - x) *
    log(1 - 2|1/2 - x|), clamped to [sigma_min, sigma_max]. As k-diffusion, no final zero."""
    x = torch.linspace(0, 1, steps)
    lam = mu - beta_ * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)  # 1e-5: no log(0)
    return torch.clamp(torch.exp(lam), min=sigma_min, max=sigma_max)


def vp_range(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """Song et al. 2021's continuous variance-preserving SDE as noise levels: sigma(t) =
    sqrt(exp(beta_d t^2/2 + beta_min t) - 1) for t from 1 down to eps_s."""
    t = torch.linspace(1, eps_s, steps)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


def beta(ms: ModelSampling, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Lee et al. 2024, "Beta Sampling is All You Need" (arXiv 2407.12173): table indices at the
    quantiles 1 - i/steps of a Beta(alpha, beta) distribution, rounded, repeats dropped."""
    from scipy.stats import beta as beta_dist  # scipy is heavy; only this scheduler needs it

    last = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    indices = np.rint(beta_dist.ppf(quantiles, alpha, beta_) * last)
    sigmas, previous = [], -1
    for t in indices:
        if t != previous:
            sigmas.append(float(ms.sigmas[int(t)]))
        previous = t
    return torch.FloatTensor(sigmas + [0.0])


def linear_quadratic(
    ms: ModelSampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Genmo's Mochi schedule: noise level rises linearly to `threshold_noise` over the first half
    of the steps, then quadratically to 1; sigmas are 1 - that, times sigma_max."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = step_diff / (linear_steps * quadratic_steps**2)
        lin_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quad_coef * (linear_steps**2)
        quadratic = [quad_coef * (i**2) + lin_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.FloatTensor(schedule) * ms.sigma_max.cpu()


def kl_optimal(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Sabour et al. 2024 ("Align Your Steps"), the KL-optimal schedule: evenly spaced in
    arctan(sigma) from sigma_max to sigma_min. One step gives [sigma_max, 0] (ComfyUI divides
    0 by 0 there and returns NaN)."""
    sigma_min, sigma_max = float(ms.sigma_min), float(ms.sigma_max)
    if steps == 1:
        return torch.FloatTensor([sigma_max, 0.0])
    ramp = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = ramp.new_zeros(steps + 1)
    sigmas[:-1] = (ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan_()
    return sigmas


# ComfyUI's SCHEDULER_NAMES, in its order (the KSampler combo lists them so).
SCHEDULERS: dict[str, Callable[[ModelSampling, int], torch.Tensor]] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}

# KSampler runs these samplers on one extra step and drops the penultimate sigma.
DISCARD_PENULTIMATE_SIGMA = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int) -> torch.Tensor:
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULERS)}")
    if steps < 1:
        raise ValueError(f"a schedule needs at least 1 step, not {steps}")
    return SCHEDULERS[scheduler](ms, steps)


def scheduler_sigmas(ms: ModelSampling, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The BasicScheduler node: with denoise < 1 the schedule is made for int(steps / denoise)
    steps and only its last `steps` are kept; denoise <= 0 gives no sigmas at all."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = int(steps / denoise)
    return calculate_sigmas(ms, scheduler, total)[-(steps + 1) :]


def ksampler_sigmas(
    ms: ModelSampling, scheduler: str, steps: int, denoise: float = 1.0, sampler: str = "euler"
) -> torch.Tensor:
    """KSampler's sigmas: BasicScheduler's truncation (full schedule above denoise 0.9999), and one
    extra step with the penultimate sigma dropped for dpm_2, dpm_2_ancestral and uni_pc."""

    def full(n: int) -> torch.Tensor:
        if sampler in DISCARD_PENULTIMATE_SIGMA:
            sigmas = calculate_sigmas(ms, scheduler, n + 1)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return calculate_sigmas(ms, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return full(int(steps / denoise))[-(steps + 1) :]


def advanced_sigmas(
    sigmas: torch.Tensor, start_step: int | None, last_step: int | None, force_full_denoise: bool
) -> torch.Tensor | None:
    """KSamplerAdvanced's step range: stop after `last_step` (sampling to 0 there only with
    force_full_denoise), start at `start_step`. None when no step is left (ComfyUI then returns
    the input latent unchanged)."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas
