"""ComfyUI's samplers and guiders for FLUX: bit-exact with FluxSampler where the two worlds meet,
running on a tiny real FLUX transformer, and converging on flows whose exact answer is known."""

from __future__ import annotations

import copy

import pytest
import torch

from nodes.comfy import guiders, samplers
from nodes.comfy import model_sampling as ms
from nodes.comfy import noise as nz
from nodes.comfy import schedulers as sc
from nodes.flux import math as fm
from nodes.flux import sampler as flux_sampler
from nodes.flux.demo import PRESETS, _transformer
from nodes.flux.encode import Conditioning

# Samplers that draw noise beyond the starting noise: a seed changes their result.
STOCHASTIC = {
    "euler_ancestral",
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "lcm",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "res_multistep_ancestral",
    "ddpm",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
}
FIRST_ORDER = {"euler", "ddim", "heunpp2", "gradient_estimation"}
# Ancestral samplers that read sigma as variance exploding on every model, as ComfyUI's do: on a
# flow their spread grows (see test_comfy_samplers_more.py).
VARIANCE_EXPLODING = {"ddpm", "res_multistep_ancestral"}
# DPM-Solver fast/adaptive choose their own steps between the schedule's ends and stop at the last
# sigma above 0, as ComfyUI's do (tested in test_comfy_samplers_more.py).
OWN_STEPS = {"dpm_fast", "dpm_adaptive"}


# --- a tiny real FLUX transformer -----------------------------------------------------------


@pytest.fixture(scope="module")
def transformers():
    """Random tiny FLUX transformers: dev-like (guidance embeddings) and schnell-like (none)."""
    torch.manual_seed(0)
    dev = _transformer(PRESETS["tiny"], guidance_embeds=True).eval()
    torch.manual_seed(1)
    schnell = _transformer(PRESETS["tiny"], guidance_embeds=False).eval()
    return {"dev": dev, "schnell": schnell}


def conditioning(seed: int, tokens: int = 8) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    preset = PRESETS["tiny"]
    return Conditioning(
        prompt_embeds=torch.randn(1, tokens, preset.t5_d_model, generator=g),
        pooled_prompt_embeds=torch.randn(1, preset.clip_hidden, generator=g),
        text_ids=torch.zeros(tokens, 3),
    )


def flux_predict(transformer, guidance: float = 3.5):
    """predict(x, sigma, cond) for the guiders: one transformer call per conditioning."""

    def predict(x, sigma, cond: Conditioning):
        return ms.flux_velocity(
            transformer,
            x,
            sigma,
            prompt_embeds=cond.prompt_embeds,
            pooled_prompt_embeds=cond.pooled_prompt_embeds,
            txt_ids=cond.text_ids,
            guidance=guidance,
        )

    return predict


CPU = torch.device("cpu")


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_euler_equals_flux_sampler_bit_for_bit(transformers, variant):
    """FluxSampler's own sigmas, ComfyUI's noise for the same seed, fp32, euler: the latents are
    torch.equal to nodes.flux.sampler.sample()'s."""
    transformer = transformers[variant]
    config = fm.ShiftConfig() if variant == "dev" else fm.ShiftConfig(shift=1.0, use_dynamic_shifting=False)
    positive = conditioning(10)
    latent = torch.zeros(1, 16, 8, 12)  # a 96x64 image
    settings = flux_sampler.SamplerSettings(seed=42, steps=4, guidance=3.5)
    reference = flux_sampler.sample(
        transformer,
        positive=positive,
        latent={"samples": latent},
        settings=settings,
        shift=config,
        device=CPU,
    )

    sigmas = flux_sampler.schedule(8, 12, 4, config, CPU)
    noise = nz.prepare_noise(latent, 42)
    model_sampling = ms.flux_dev() if variant == "dev" else ms.flux_schnell()
    model = samplers.FlowModel(guiders.basic_guider(flux_predict(transformer), positive), model_sampling)
    for name in ("euler", "ddim"):
        ours = samplers.sample(model, name, sigmas, noise, latent, seed=42)
        assert torch.equal(ours, reference), name
    # and with CFGGuider at cfg 1, which skips the negative
    cfg_one = samplers.FlowModel(
        guiders.cfg_guider(flux_predict(transformer), positive, conditioning(11), 1.0), model_sampling
    )
    assert torch.equal(samplers.sample(cfg_one, "euler", sigmas, noise, latent, seed=42), reference)


def test_true_cfg_equals_flux_sampler_bit_for_bit(transformers):
    transformer = transformers["dev"]
    config = fm.ShiftConfig()
    positive, negative = conditioning(20), conditioning(21)
    latent = torch.zeros(1, 16, 8, 8)
    settings = flux_sampler.SamplerSettings(seed=7, steps=3, guidance=3.5, true_cfg_scale=4.0)
    reference = flux_sampler.sample(
        transformer,
        positive=positive,
        negative=negative,
        latent={"samples": latent},
        settings=settings,
        shift=config,
        device=CPU,
    )

    velocity = guiders.cfg_guider(flux_predict(transformer), positive, negative, 4.0)
    model = samplers.FlowModel(velocity, ms.flux_dev())
    sigmas = flux_sampler.schedule(8, 8, 3, config, CPU)
    ours = samplers.sample(model, "euler", sigmas, nz.prepare_noise(latent, 7), latent, seed=7)
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("name", list(samplers.SAMPLERS))
def test_every_sampler_runs_on_a_tiny_flux_transformer(transformers, name):
    positive = conditioning(30)
    model = samplers.FlowModel(
        guiders.basic_guider(flux_predict(transformers["dev"]), positive), ms.flux_dev()
    )
    latent = torch.zeros(1, 16, 8, 8)
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 3)
    noise = nz.prepare_noise(latent, 3)
    steps = []
    out = samplers.sample(
        model, name, sigmas, noise, latent, seed=3, callback=lambda info: steps.append(info["i"])
    )
    assert out.shape == latent.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.equal(out, noise)
    if name not in OWN_STEPS:
        assert steps == [0, 1, 2], "one report per step"
    # Beyond the starting noise, the seed only feeds the ancestral and SDE samplers' extra noise.
    other_seed = samplers.sample(model, name, sigmas, noise, latent, seed=4)
    if name in STOCHASTIC:
        assert not torch.equal(other_seed, out)
        assert torch.equal(samplers.sample(model, name, sigmas, noise, latent, seed=3), out), (
            "not reproducible"
        )
    else:
        assert torch.equal(other_seed, out)


# --- flows whose exact answer is known ------------------------------------------------------


def point_mass_flow(x0: torch.Tensor):
    """Data concentrated on x0: the exact velocity is (x - x0) / sigma, the denoised estimate
    is x0 everywhere, and every sampler must land on x0."""

    def velocity(x, sigma):
        return (x - x0) / sigma.view(-1, 1, 1, 1)

    return velocity


def gaussian_flow(mean: torch.Tensor, std: torch.Tensor):
    """Data x0 ~ N(mean, std^2) elementwise, x = (1 - sigma) x0 + sigma n. The exact denoiser is
    E[x0 | x] = mean + (1-sigma) std^2 / ((1-sigma)^2 std^2 + sigma^2) * (x - (1-sigma) mean),
    and the probability-flow ODE carries noise z at sigma 1 to mean + std * z at sigma 0."""

    def velocity(x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        a = 1 - s
        denoised = mean + a * std**2 / (a**2 * std**2 + s**2) * (x - a * mean)
        return (x - denoised) / s

    return velocity


@pytest.mark.parametrize("name", sorted(set(samplers.SAMPLERS) - OWN_STEPS))
def test_every_sampler_lands_on_a_point_mass(name):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 16, 16, generator=g)
    model = samplers.FlowModel(point_mass_flow(x0), ms.flux_dev())
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 8)
    latent = torch.zeros_like(x0)
    out = samplers.sample(model, name, sigmas, nz.prepare_noise(latent, 1), latent, seed=1)
    # uni_pc stops at sigma 0.001 and then divides by 0.999, as ComfyUI's does
    tolerance = 1e-2 if name.startswith("uni_pc") else 1e-4
    assert (out - x0).abs().max() < tolerance


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    shape = (1, 16, 32, 32)
    mean, std = torch.randn(shape, generator=g) * 0.5, torch.rand(shape, generator=g) * 0.5 + 0.5
    noise = nz.prepare_noise(torch.zeros(shape), 9)
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    return model, mean, std, noise


@pytest.mark.parametrize("name", sorted(set(samplers.SAMPLERS) - STOCHASTIC - OWN_STEPS))
def test_deterministic_samplers_solve_the_gaussian_flow(gaussian, name):
    model, mean, std, noise = gaussian
    exact = mean + std * noise

    def error(steps: int) -> float:
        sigmas = sc.calculate_sigmas(model.model_sampling, "simple", steps)
        return (
            (samplers.sample(model, name, sigmas, noise, torch.zeros_like(noise), seed=9) - exact).abs().max()
        )

    coarse = error(30)
    assert coarse < (0.35 if name in FIRST_ORDER else 0.1), coarse
    assert error(90) < coarse / 2, "more steps must bring the sampler closer to the exact solution"


@pytest.mark.parametrize("name", sorted(STOCHASTIC - {"lcm"} - VARIANCE_EXPLODING))
def test_stochastic_samplers_sample_the_gaussian(gaussian, name):
    """Ancestral and SDE samplers do not follow the ODE path, but land in the data distribution:
    (out - mean) / std is standard normal over the 16k elements."""
    model, mean, std, noise = gaussian
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 90)
    z = (samplers.sample(model, name, sigmas, noise, torch.zeros_like(noise), seed=9) - mean) / std
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.08, (z.mean(), z.std())


def test_lcm_jumps_to_the_denoised_estimate(gaussian):
    """LCM renoises the posterior mean at every step: on a model that is not a consistency model
    the spread shrinks (as in ComfyUI), but the result stays centred on the data."""
    model, mean, std, noise = gaussian
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 8)
    z = (samplers.sample(model, "lcm", sigmas, noise, torch.zeros_like(noise), seed=9) - mean) / std
    assert abs(z.mean().item()) < 0.05 and 0.4 < z.std().item() < 0.9


# --- the sampling run and the guiders -------------------------------------------------------


def test_sampling_from_a_latent_starts_from_its_noised_version():
    """denoise < 1: the latent is noised to the first sigma (sigma*noise + (1-sigma)*latent)."""
    g = torch.Generator().manual_seed(3)
    latent, noise = torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 16, 4, 4, generator=g)
    seen = []
    model = samplers.FlowModel(lambda x, sigma: seen.append(x.clone()) or torch.zeros_like(x), ms.flux_dev())
    sigmas = sc.scheduler_sigmas(model.model_sampling, "simple", 4, denoise=0.5)
    out = samplers.sample(model, "euler", sigmas, noise, latent, seed=0)
    assert torch.allclose(seen[0], sigmas[0] * noise + (1 - sigmas[0]) * latent)
    assert torch.allclose(out, seen[0])  # a zero velocity leaves x where it started
    assert samplers.sample(model, "euler", torch.FloatTensor([]), noise, latent, seed=0) is latent


def test_sample_latent_scales_raw_vae_latents_in_and_out():
    raw = torch.full((1, 16, 4, 4), 0.5)
    model = samplers.FlowModel(point_mass_flow(ms.latent_in(raw)), ms.flux_dev())
    sigmas = sc.simple(model.model_sampling, 4)
    out = samplers.sample_latent(model, "euler", sigmas, nz.prepare_noise(raw, 0), raw, seed=0)
    assert torch.allclose(out, raw, atol=1e-5) and out.dtype == torch.float32
    assert torch.allclose(ms.latent_in(raw), (raw - 0.1159) * 0.3611)
    # an all-zero (empty) latent is not shifted in, as ComfyUI leaves it
    target = torch.zeros_like(raw)
    empty = samplers.FlowModel(point_mass_flow(target), ms.flux_dev())
    out = samplers.sample_latent(empty, "euler", sigmas, nz.prepare_noise(raw, 0), target, seed=0)
    assert torch.allclose(out, ms.latent_out(target), atol=1e-5)


def counting_predict(calls: list):
    def predict(x, sigma, cond):
        calls.append(cond)
        return torch.full_like(x, float(cond))

    return predict


def test_cfg_one_runs_only_the_positive():
    calls = []
    velocity = guiders.cfg_guider(counting_predict(calls), 2.0, 5.0, 1.0)
    out = velocity(torch.zeros(1, 16, 2, 2), torch.tensor([0.5]))
    assert calls == [2.0] and torch.all(out == 2.0)
    calls.clear()
    assert torch.all(guiders.basic_guider(counting_predict(calls), 3.0)(torch.zeros(1, 1, 1, 1), None) == 3.0)
    assert calls == [3.0]


def test_cfg_runs_the_negative_and_extrapolates():
    calls = []
    velocity = guiders.cfg_guider(counting_predict(calls), 2.0, 5.0, 3.5)
    out = velocity(torch.zeros(1, 16, 2, 2), torch.tensor([0.5]))
    assert calls == [2.0, 5.0]
    assert torch.allclose(out, torch.tensor(5.0 + 3.5 * (2.0 - 5.0)))
    assert out.dtype == torch.float32


def test_cfg_without_a_negative_is_refused():
    with pytest.raises(ValueError, match="cfg 4.0 needs a negative"):
        guiders.cfg_guider(counting_predict([]), 2.0, None, 4.0)


def test_unknown_and_missing_samplers_are_named():
    with pytest.raises(ValueError, match="'euler_cfg_pp' is one of ComfyUI's but fluxloom does not have it"):
        samplers.get_sampler("euler_cfg_pp")
    with pytest.raises(ValueError, match="unknown sampler 'eulr'.*euler"):
        samplers.get_sampler("eulr")
    assert set(samplers.SAMPLERS) <= set(samplers.COMFY_SAMPLER_NAMES)


def test_bf16_model_keeps_comfyuis_float32_latents(transformers):
    """With a bf16 model ComfyUI draws float32 noise and keeps the latents in float32 between
    steps, where FluxSampler (diffusers) draws bf16 noise and rounds the latents to bf16 after
    each step: the two agree to bf16 precision only."""
    transformer = copy.deepcopy(transformers["schnell"]).to(torch.bfloat16)
    config = fm.ShiftConfig(shift=1.0, use_dynamic_shifting=False)
    positive = conditioning(40)
    positive = Conditioning(
        positive.prompt_embeds.bfloat16(), positive.pooled_prompt_embeds.bfloat16(), positive.text_ids
    )
    latent = torch.zeros(1, 16, 8, 8)
    settings = flux_sampler.SamplerSettings(seed=5, steps=3)
    reference = flux_sampler.sample(
        transformer,
        positive=positive,
        latent={"samples": latent},
        settings=settings,
        shift=config,
        device=CPU,
    )
    model = samplers.FlowModel(guiders.basic_guider(flux_predict(transformer), positive), ms.flux_schnell())
    sigmas = flux_sampler.schedule(8, 8, 3, config, CPU)
    ours = samplers.sample(model, "euler", sigmas, nz.prepare_noise(latent, 5), latent, seed=5)
    assert ours.dtype == torch.float32 and reference.dtype == torch.bfloat16
    assert not torch.equal(ours, reference.float())
    assert torch.allclose(ours, reference.float(), atol=0.05, rtol=0.02)
