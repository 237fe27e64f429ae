"""ComfyUI's samplers for FLUX (flow matching), as small pure functions in k-diffusion's signature.

Why written here rather than imported: k-diffusion (PyPI 0.1.1, MIT) imports torchvision when
imported, and PyPI's torchvision does not import beside this project's torch 2.13 CPU build; it
also lacks ddim, lcm, deis, uni_pc and the rectified-flow ancestral variants ComfyUI switches to
for FLUX. diffusers' flow-matching schedulers (FlowMatchEuler/Heun/LCM, DPMSolverMultistep,
UniPC and DEIS with flow sigmas) are stateful objects over their own timestep grids, and their
multistep solvers work in log(alpha/sigma) where ComfyUI's dpmpp_2m, deis and uni_pc work in
log(sigma) on FLUX: same names, different numbers. ComfyUI is GPL. So each sampler is written
again from its published formulas (cited on each), with ComfyUI (a125cd8, comfy/k_diffusion/
sampling.py, comfy/k_diffusion/deis.py, comfy/k_diffusion/sa_solver.py, comfy/extra_samplers/
uni_pc.py, comfy/samplers.py's ksampler for dpm_fast/dpm_adaptive) read for the exact behaviour on
flow models, quirks included.

The shape is k-diffusion's: `sampler(model, x, sigmas, extra_args=None, callback=None,
disable=None, **options) -> x`, with `extra_args["seed"]` seeding the extra noise as ComfyUI does
and `callback({"x", "i", "sigma", "sigma_hat", "denoised"})` after each model evaluation of a step.
One difference: `model(x, sigma)` returns the *velocity* v, FLUX's own output, not the denoised
x0 = x - sigma*v. Where a formula steps along the ODE derivative (x - x0)/sigma (euler, heun,
dpm_2, lms, deis, ddim) it uses v itself, which is that derivative exactly: ComfyUI's round trip
through x0 changes the last bits, ours does not, and so `euler` on FluxSampler's sigmas and noise
equals FluxSampler bit for bit. Formulas written in x0 (the DPM-Solver++ family, ancestral, lcm,
uni_pc) take x0 = x - sigma*v as ComfyUI does.

This module is the registry (ComfyUI's names → functions) and the sampling run; the samplers live
in samplers_core.py (the shared helpers and k-diffusion's original set), samplers_multistep.py
(ComfyUI's newer multistep and stochastic ones) and samplers_solvers.py (DPM-Solver fast/adaptive,
SA-Solver).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from nodes.comfy.model_sampling import (
    inverse_noise_scaling,
    latent_in,
    latent_out,
    noise_scaling,
)
from nodes.comfy.samplers_core import (
    FlowModel,
    sample_deis,
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_lcm,
    sample_lms,
    sample_unipc,
    sample_unipc_bh2,
)
from nodes.comfy.samplers_multistep import (
    sample_ddpm,
    sample_dpmpp_3m_sde,
    sample_er_sde,
    sample_gradient_estimation,
    sample_heunpp2,
    sample_ipndm,
    sample_ipndm_v,
    sample_res_multistep,
    sample_seeds_2,
    sample_seeds_3,
)
from nodes.comfy.samplers_solvers import (
    sample_dpm_adaptive,
    sample_dpm_fast,
    sample_sa_solver,
)

# --- registry and the sampling run ----------------------------------------------------------

Sampler = Callable[..., torch.Tensor]

SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": partial(sample_dpmpp_sde, cpu_tree=False),
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": partial(sample_dpmpp_2m_sde, cpu_tree=False),
    "dpmpp_2m_sde_heun": partial(sample_dpmpp_2m_sde, solver_type="heun"),
    "dpmpp_2m_sde_heun_gpu": partial(sample_dpmpp_2m_sde, solver_type="heun", cpu_tree=False),
    # ComfyUI's ddim is euler (its only difference, fresh noise for masked inpainting, needs a mask)
    "ddim": sample_euler,
    "lcm": sample_lcm,
    "deis": sample_deis,
    "uni_pc": sample_unipc,
    "uni_pc_bh2": sample_unipc_bh2,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": partial(sample_dpmpp_3m_sde, cpu_tree=False),
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "res_multistep": sample_res_multistep,
    "res_multistep_ancestral": partial(sample_res_multistep, eta=1.0),
    "heunpp2": sample_heunpp2,
    "ddpm": sample_ddpm,
    "gradient_estimation": sample_gradient_estimation,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": partial(sample_sa_solver, use_pece=True),
}

# ComfyUI's SAMPLER_NAMES (a125cd8), in its order: what a KSampler combo offers and workflows carry.
COMFY_SAMPLER_NAMES = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
    "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip


def get_sampler(name: str) -> Sampler:
    if name in SAMPLERS:
        return SAMPLERS[name]
    if name in COMFY_SAMPLER_NAMES:
        raise ValueError(
            f"sampler {name!r} is one of ComfyUI's but fluxloom does not have it yet; "
            f"available: {', '.join(SAMPLERS)}"
        )
    raise ValueError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}")


def sample(
    model: FlowModel,
    sampler: str | Sampler,
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    latent: torch.Tensor,
    *,
    seed: int | None,
    callback: Callable[[dict], None] | None = None,
    device: torch.device | str | None = None,
    **options,
) -> torch.Tensor:
    """One sampling run in the model's latent space, as ComfyUI's CFGGuider.sample and
    KSAMPLER.sample: noise, latent and sigmas move to `device` (the model's; default the
    noise's), the latent is noised to sigmas[0] (sigma*noise + (1-sigma)*latent), the sampler
    runs, the noise scaling is undone at the last sigma. No sigmas: the latent comes back as it is.
    `seed` seeds the ancestral and SDE samplers' extra noise (ComfyUI passes the noise seed); the
    ancestral samplers draw it on `device`, as ComfyUI does."""
    if len(sigmas) == 0:
        return latent
    function = get_sampler(sampler) if isinstance(sampler, str) else sampler
    device = noise.device if device is None else device
    noise, sigmas = noise.to(device), sigmas.to(device)
    x = noise_scaling(sigmas[0], noise, latent.to(device))
    samples = function(model, x, sigmas, extra_args={"seed": seed}, callback=callback, **options)
    return inverse_noise_scaling(sigmas[-1], samples)


def sample_latent(model, sampler, sigmas, noise, samples, *, seed, callback=None, device=None, **options):
    """`sample` on a ComfyUI LATENT's raw VAE latents: shifted and scaled in (unless all zero,
    as an empty latent stays), sampled, and back out in float32."""
    if len(sigmas) == 0:
        return samples
    latent = latent_in(samples) if torch.count_nonzero(samples) > 0 else samples
    out = sample(
        model, sampler, sigmas, noise, latent, seed=seed, callback=callback, device=device, **options
    )
    return latent_out(out.to(torch.float32))
