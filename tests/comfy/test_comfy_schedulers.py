"""ComfyUI's schedulers on FLUX.1-dev (1024x1024, 20 steps) and schnell (4 steps), against sigmas
derived here again from the formulas, in float64, independently of nodes.comfy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import betaincinv

from nodes.comfy import model_sampling as ms
from nodes.comfy import schedulers as sc

# --- the two models' noise levels, written again -------------------------------------------
# FLUX.1-dev: ComfyUI's ModelSamplingFlux, table t = k/10000 (k = 1..10000) through FLUX's time
# shift sigma(t) = e^mu / (e^mu + 1/t - 1); mu = 1.15, which is also what a ModelSamplingFlux
# node computes at 1024x1024 (4096 patches of 2x2 latents, the top of its 256..4096 line).
# FLUX.1-schnell: ModelSamplingDiscreteFlow with shift 1: table t = k/1000, sigma = t.


def dev_sigma(t):
    mu = 1.15
    return math.exp(mu) / (math.exp(mu) + 1 / np.asarray(t, dtype=np.float64) - 1)


def schnell_sigma(t):
    return np.asarray(t, dtype=np.float64)


MODELS = {
    # name: (model sampling, steps, sigma(t), table size)
    "dev": (lambda: ms.model_sampling_flux(1.15, 0.5, 1024, 1024), 20, dev_sigma, 10000),
    "schnell": (ms.flux_schnell, 4, schnell_sigma, 1000),
}


def table(sigma, size):
    return sigma(np.arange(1, size + 1) / size)


def expected(name: str, model: str) -> np.ndarray:
    _, n, sigma, size = MODELS[model]
    tab = table(sigma, size)
    s_min, s_max = tab[0], tab[-1]
    if name == "simple":
        # uniform in timestep: t_i = 1 - i/n (every size/n-th table entry from the top)
        return np.append(sigma(1 - np.arange(n) / n), 0.0)
    if name == "normal":
        # n timesteps evenly from timestep(sigma_max) = 1 to timestep(sigma_min); FLUX's timestep
        # of a sigma is the sigma itself, so the last one is sigma(sigma_min)
        return np.append(sigma(np.linspace(1.0, s_min, n)), 0.0)
    if name == "sgm_uniform":
        # n + 1 such timesteps, the last dropped (SGM's "trailing" spacing)
        return np.append(sigma(np.linspace(1.0, s_min, n + 1)[:-1]), 0.0)
    if name == "karras":
        # Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative
        # Models") eq. 5 with rho = 7, between the table's sigma_min and sigma_max
        rho = 7.0
        ramp = np.arange(n) / (n - 1)
        return np.append((s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho, 0.0)
    if name == "exponential":
        # log-linear from sigma_max to sigma_min (k-diffusion's exponential schedule)
        return np.append(np.exp(np.linspace(math.log(s_max), math.log(s_min), n)), 0.0)
    if name == "ddim_uniform":
        # table entries 1, 1 + size//n, 1 + 2*size//n, ... (0-based), highest first, then 0
        picked = tab[np.arange(1, size, size // n)]
        return np.append(picked[::-1], 0.0)
    if name == "beta":
        # Lee et al. 2024 ("Beta Sampling is All You Need", arXiv 2407.12173): table indices at
        # the Beta(0.6, 0.6) quantiles of 1 - i/n, rounded, over the size - 1 table intervals
        indices = np.rint(betaincinv(0.6, 0.6, 1 - np.arange(n) / n) * (size - 1)).astype(int)
        indices = [k for i, k in enumerate(indices) if i == 0 or k != indices[i - 1]]
        return np.append(tab[indices], 0.0)
    if name == "linear_quadratic":
        # Genmo Mochi's schedule: noise level i * 0.025/(n/2) for the first n/2 steps, then the
        # quadratic through (n/2, 0.025) with matching slope that reaches 1 at step n
        half, thr = n // 2, 0.025
        levels = [i * thr / half for i in range(half)]
        a = (half - thr * n) / (half * (n - half) ** 2)
        b = thr / half - 2 * (half - thr * n) / (n - half) ** 2
        levels += [a * i * i + b * i + a * half * half for i in range(half, n)]
        return (1 - np.array(levels + [1.0])) * s_max
    if name == "kl_optimal":
        # Sabour et al. 2024 ("Align Your Steps"): evenly spaced in arctan(sigma)
        ramp = np.arange(n) / (n - 1)
        return np.append(np.tan(ramp * math.atan(s_min) + (1 - ramp) * math.atan(s_max)), 0.0)
    raise AssertionError(name)


@pytest.mark.parametrize("model", ["dev", "schnell"])
@pytest.mark.parametrize("name", list(sc.SCHEDULERS))
def test_scheduler_sigmas_match_the_formula(name, model):
    make, steps, _, _ = MODELS[model]
    sigmas = sc.calculate_sigmas(make(), name, steps)
    want = expected(name, model)
    assert sigmas.dtype == torch.float32
    assert sigmas.shape == (len(want),)
    assert sigmas[-1] == 0
    assert torch.all(sigmas[:-1] > sigmas[1:]), "sigmas must fall strictly"
    np.testing.assert_allclose(sigmas.double().numpy(), want, rtol=2e-6, atol=2e-7)


def test_the_table_ends_of_dev_and_schnell():
    dev, schnell = ms.flux_dev(), ms.flux_schnell()
    assert dev.sigma_max == 1.0 and schnell.sigma_max == 1.0
    assert float(dev.sigma_min) == pytest.approx(dev_sigma(1e-4), rel=1e-6)
    assert float(schnell.sigma_min) == pytest.approx(1e-3, rel=1e-6)
    assert len(dev.sigmas) == 10000 and len(schnell.sigmas) == 1000
    assert dev.percent_to_sigma(1e-4) == pytest.approx(float(dev_sigma(1 - 1e-4)), rel=1e-12)
    assert schnell.percent_to_sigma(0.25) == 0.75
    assert dev.percent_to_sigma(0.0) == 1.0 and dev.percent_to_sigma(1.0) == 0.0


def test_model_sampling_flux_node_shift():
    # the ModelSamplingFlux node: mu linear in width*height/256 between (256, base) and (4096, max)
    assert ms.shift_for_resolution(1.15, 0.5, 1024, 1024) == pytest.approx(1.15)
    assert ms.shift_for_resolution(1.15, 0.5, 256, 256) == pytest.approx(0.5)
    assert ms.shift_for_resolution(1.15, 0.5, 512, 512) == pytest.approx(0.5 + 768 * 0.65 / 3840)
    assert ms.model_sampling_flux(1.15, 0.5, 1024, 1024).shift == pytest.approx(ms.FLUX_DEV_SHIFT)
    # a larger shift keeps the noise level high for longer
    low, high = ms.model_sampling_flux(1.15, 0.5, 512, 512), ms.flux_dev(3.0)
    assert torch.all(sc.simple(high, 10)[1:-1] > sc.simple(low, 10)[1:-1])


def test_basic_scheduler_denoise_keeps_the_tail_of_a_longer_schedule():
    dev = ms.flux_dev()
    full = sc.calculate_sigmas(dev, "simple", 20)  # int(10 / 0.5) = 20 steps
    half = sc.scheduler_sigmas(dev, "simple", 10, denoise=0.5)
    assert torch.equal(half, full[-11:])
    assert torch.equal(sc.scheduler_sigmas(dev, "karras", 7, denoise=0.3), sc.karras(dev, 23)[-8:])
    assert torch.equal(sc.scheduler_sigmas(dev, "normal", 20, 1.0), sc.normal(dev, 20))
    assert len(sc.scheduler_sigmas(dev, "simple", 20, denoise=0.0)) == 0


def test_ksampler_sigmas_drop_the_penultimate_sigma_for_dpm_2_and_uni_pc():
    dev = ms.flux_dev()
    longer = sc.calculate_sigmas(dev, "simple", 21)
    for sampler in ("uni_pc", "uni_pc_bh2", "dpm_2", "dpm_2_ancestral"):
        sigmas = sc.ksampler_sigmas(dev, "simple", 20, 1.0, sampler)
        assert torch.equal(sigmas, torch.cat([longer[:-2], longer[-1:]]))
        assert len(sigmas) == 21
    assert torch.equal(sc.ksampler_sigmas(dev, "simple", 20, 1.0, "euler"), sc.simple(dev, 20))
    # KSampler treats denoise above 0.9999 as 1, BasicScheduler does not
    assert torch.equal(sc.ksampler_sigmas(dev, "beta", 20, 0.99995), sc.beta(dev, 20))
    assert len(sc.scheduler_sigmas(dev, "beta", 20, 0.99995)) == 21
    assert torch.equal(sc.ksampler_sigmas(dev, "simple", 8, 0.5), sc.simple(dev, 16)[-9:])


def test_ksampler_advanced_step_range():
    sigmas = sc.simple(ms.flux_dev(), 10)
    assert torch.equal(sc.advanced_sigmas(sigmas, 0, 10000, False), sigmas)
    assert torch.equal(sc.advanced_sigmas(sigmas, 3, None, False), sigmas[3:])
    partial = sc.advanced_sigmas(sigmas, 2, 6, False)
    assert torch.equal(partial, sigmas[2:7]) and partial[-1] > 0
    forced = sc.advanced_sigmas(sigmas, 2, 6, True)
    assert torch.equal(forced[:-1], sigmas[2:6]) and forced[-1] == 0
    assert sigmas[6] > 0, "forcing the end to 0 must not change the caller's sigmas"
    assert sc.advanced_sigmas(sigmas, 10, None, False) is None


def test_unknown_scheduler_and_bad_steps_are_named():
    with pytest.raises(ValueError, match="unknown scheduler 'linear'.*simple"):
        sc.calculate_sigmas(ms.flux_dev(), "linear", 20)
    with pytest.raises(ValueError, match="at least 1 step"):
        sc.calculate_sigmas(ms.flux_dev(), "simple", 0)


def test_one_step_schedules_end_in_zero():
    for name in sc.SCHEDULERS:
        sigmas = sc.calculate_sigmas(ms.flux_schnell(), name, 1)
        assert len(sigmas) == 2 and torch.isfinite(sigmas).all() and sigmas[-1] == 0, name
        # ddim_uniform starts at the table's second entry, which for one step is all it takes
        assert float(sigmas[0]) == pytest.approx(0.002 if name == "ddim_uniform" else 1.0), name
