"""More of ComfyUI's samplers for FLUX (dpmpp_3m_sde, ipndm, res_multistep, heunpp2, ddpm, er_sde,
gradient_estimation, seeds): registered, running on a tiny real FLUX transformer, and converging
on flows whose exact answer is known, at the rate their order gives."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from nodes.comfy import guiders, samplers, samplers_core, samplers_multistep, samplers_solvers
from nodes.comfy import model_sampling as ms
from nodes.comfy import noise as nz
from nodes.comfy import schedulers as sc
from nodes.flux.demo import PRESETS, _transformer
from nodes.flux.encode import Conditioning

NEW = (
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ipndm",
    "ipndm_v",
    "res_multistep",
    "res_multistep_ancestral",
    "heunpp2",
    "ddpm",
    "gradient_estimation",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "dpm_fast",
    "dpm_adaptive",
    "sa_solver",
    "sa_solver_pece",
)
OWN_STEPS = {"dpm_fast", "dpm_adaptive"}  # their steps are not the schedule's
# Samplers that draw noise beyond the starting noise: a seed changes their result.
STOCHASTIC = {
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
CALLBACK_KEYS = {"x", "i", "sigma", "sigma_hat", "denoised"}


def test_the_new_samplers_are_registered():
    for name in NEW:
        assert name in samplers.COMFY_SAMPLER_NAMES
        assert samplers.get_sampler(name) is samplers.SAMPLERS[name]
    assert samplers.get_sampler("dpmpp_3m_sde_gpu").keywords == {"cpu_tree": False}
    assert samplers.get_sampler("res_multistep_ancestral").keywords == {"eta": 1.0}


# --- a tiny real FLUX transformer -----------------------------------------------------------


@pytest.fixture(scope="module")
def flux_model():
    torch.manual_seed(0)
    transformer = _transformer(PRESETS["tiny"], guidance_embeds=True).eval()
    g = torch.Generator().manual_seed(30)
    preset = PRESETS["tiny"]
    positive = Conditioning(
        prompt_embeds=torch.randn(1, 8, preset.t5_d_model, generator=g),
        pooled_prompt_embeds=torch.randn(1, preset.clip_hidden, generator=g),
        text_ids=torch.zeros(8, 3),
    )

    def predict(x, sigma, cond):
        return ms.flux_velocity(
            transformer,
            x,
            sigma,
            prompt_embeds=cond.prompt_embeds,
            pooled_prompt_embeds=cond.pooled_prompt_embeds,
            txt_ids=cond.text_ids,
            guidance=3.5,
        )

    return samplers.FlowModel(guiders.basic_guider(predict, positive), ms.flux_dev())


@pytest.mark.parametrize("name", NEW)
def test_each_new_sampler_runs_on_a_tiny_flux_transformer(flux_model, name):
    latent = torch.zeros(1, 16, 8, 8)
    sigmas = sc.calculate_sigmas(flux_model.model_sampling, "simple", 3)
    noise = nz.prepare_noise(latent, 3)
    reports = []
    out = samplers.sample(flux_model, name, sigmas, noise, latent, seed=3, callback=reports.append)
    assert out.shape == latent.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.equal(out, noise)
    if name not in OWN_STEPS:
        assert [r["i"] for r in reports] == [0, 1, 2], "one report per step"
    else:
        assert [r["i"] for r in reports] == list(range(len(reports))) and reports
    assert all(set(r) == CALLBACK_KEYS for r in reports)
    assert all(r["denoised"].shape == latent.shape for r in reports)
    other_seed = samplers.sample(flux_model, name, sigmas, noise, latent, seed=4)
    if name in STOCHASTIC:
        assert not torch.equal(other_seed, out)
        again = samplers.sample(flux_model, name, sigmas, noise, latent, seed=3)
        assert torch.equal(again, out), "not reproducible"
    else:
        assert torch.equal(other_seed, out)


# --- flows whose exact answer is known ------------------------------------------------------


def point_mass_flow(x0: torch.Tensor):
    """Data concentrated on x0: the denoised estimate is x0 everywhere."""

    def velocity(x, sigma):
        return (x - x0) / sigma.view(-1, 1, 1, 1)

    return velocity


def gaussian_flow(mean: torch.Tensor, std: torch.Tensor):
    """Data x0 ~ N(mean, std^2) elementwise on the rectified flow x = (1 - sigma) x0 + sigma n:
    the exact denoiser, whose probability-flow ODE carries noise z at sigma 1 to mean + std z."""

    def velocity(x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        a = 1 - s
        denoised = mean + a * std**2 / (a**2 * std**2 + s**2) * (x - a * mean)
        return (x - denoised) / s

    return velocity


def variance_exploding_gaussian(mean: torch.Tensor, std: torch.Tensor):
    """The same data under the variance-exploding reading x = x0 + sigma n, as a "velocity"
    (x - denoised)/sigma, so that x - sigma*v is that process's exact denoiser."""

    def velocity(x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        return (x - (mean + std**2 / (std**2 + s**2) * (x - mean))) / s

    return velocity


@pytest.mark.parametrize("name", NEW)
def test_each_new_sampler_lands_on_a_point_mass(name):
    """Every sampler lands on x0; DPM-Solver fast/adaptive stop at the last sigma above 0, on the
    straight line from the noise to x0 there."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 16, 16, generator=g)
    model = samplers.FlowModel(point_mass_flow(x0), ms.flux_dev())
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 8)
    latent = torch.zeros_like(x0)
    noise = nz.prepare_noise(latent, 1)
    out = samplers.sample(model, name, sigmas, noise, latent, seed=1)
    target = ms.noise_scaling(sigmas[-2], noise, x0) if name in OWN_STEPS else x0
    assert (out - target).abs().max() < 1e-4


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    shape = (1, 16, 32, 32)
    mean, std = torch.randn(shape, generator=g) * 0.5, torch.rand(shape, generator=g) * 0.5 + 0.5
    noise = nz.prepare_noise(torch.zeros(shape), 9)
    return mean, std, noise


# (sampler, error bound at 30 steps, least error(30)/error(60)): the ratio is about 2 for a
# first-order method and 4 for a second-order one; the max-abs error over 16k elements on the
# "simple" schedule (whose last step is long) keeps the higher orders near the second's rate.
ODE_SOLVERS = {
    "ipndm": ("ipndm", 0.1, 3.0),
    "ipndm_v": ("ipndm_v", 0.1, 3.0),
    "res_multistep": ("res_multistep", 0.15, 2.2),
    "res_multistep_ancestral eta=0": (partial(samplers.sample_res_multistep, eta=0.0), 0.15, 2.2),
    "heunpp2": ("heunpp2", 0.15, 1.8),
    "gradient_estimation": ("gradient_estimation", 0.25, 1.4),
    "dpmpp_3m_sde eta=0": (partial(samplers.sample_dpmpp_3m_sde, eta=0.0), 0.05, 2.0),
    "seeds_2 eta=0": (partial(samplers.sample_seeds_2, eta=0.0), 0.1, 3.0),
    "seeds_3 eta=0": (partial(samplers.sample_seeds_3, eta=0.0), 0.1, 3.5),
}


@pytest.mark.parametrize("case", list(ODE_SOLVERS))
def test_ode_solvers_converge_on_the_gaussian_flow(gaussian, case):
    mean, std, noise = gaussian
    sampler, bound, ratio = ODE_SOLVERS[case]
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    exact = mean + std * noise

    def error(steps: int) -> float:
        sigmas = sc.calculate_sigmas(model.model_sampling, "simple", steps)
        out = samplers.sample(model, sampler, sigmas, noise, torch.zeros_like(noise), seed=9)
        return (out - exact).abs().max().item()

    coarse, fine = error(30), error(60)
    assert coarse < bound, coarse
    assert fine < coarse / ratio, (coarse, fine)


def test_ipndm_v_weights():
    """Up to order 3 they are Adams-Bashforth's on equal steps; ComfyUI's (diff-sampler's) order-4
    weights are not (2.375 where AB4 has 55/24): they integrate polynomials up to degree 2 exactly,
    not 3. On uneven steps they are the numbers ComfyUI a125cd8's sample_ipndm_v computes."""
    expected = samplers_multistep._ADAMS_BASHFORTH
    for order in range(1, 4):
        weights = samplers_multistep._ipndm_v_weights([-0.1] * order)
        assert weights == pytest.approx(expected[order - 1], abs=1e-12)
    fourth = samplers_multistep._ipndm_v_weights([-0.1] * 4)
    assert fourth == pytest.approx([2.375, -65 / 24, 43 / 24, -11 / 24], abs=1e-12)
    for degree in range(3):  # integral over [0, 1] of s^k from values at s = 0, -1, -2, -3
        assert sum(w * (-j) ** degree for j, w in enumerate(fourth)) == pytest.approx(1 / (degree + 1))
    assert sum(w * (-j) ** 3 for j, w in enumerate(fourth)) != pytest.approx(1 / 4)

    t = [1.0, 0.83, 0.61, 0.47, 0.29, 0.2]
    steps = [t[5 - k] - t[4 - k] for k in range(4)]
    third = [w * steps[0] for w in samplers_multistep._ipndm_v_weights(steps[:3])]
    assert third == pytest.approx([-0.15539062, 0.12053571, -0.05514509], abs=1e-8)
    fourth = [w * steps[0] for w in samplers_multistep._ipndm_v_weights(steps)]
    assert fourth == pytest.approx([-0.16908203, 0.16747768, -0.09835303, 0.02011798], abs=1e-8)


def test_ipndm_and_ipndm_v_agree_on_equal_steps(gaussian):
    mean, std, noise = gaussian
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    sigmas = torch.linspace(1.0, 0.1, 12)  # equal steps, never reaching 0
    x = noise * sigmas[0]
    fixed = samplers.sample_ipndm(model, x, sigmas, max_order=3)
    variable = samplers.sample_ipndm_v(model, x, sigmas, max_order=3)
    assert torch.allclose(fixed, variable, atol=1e-5)
    uneven = sc.calculate_sigmas(model.model_sampling, "simple", 12)
    fixed, variable = samplers.sample_ipndm(model, x, uneven), samplers.sample_ipndm_v(model, x, uneven)
    assert not torch.allclose(fixed, variable)


def test_res_multistep_ancestral_without_eta_is_res_multistep(gaussian):
    mean, std, noise = gaussian
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 10)
    x = noise * sigmas[0]
    reference = samplers.sample_res_multistep(model, x, sigmas, extra_args={"seed": 1})
    no_eta = samplers.SAMPLERS["res_multistep_ancestral"](model, x, sigmas, extra_args={"seed": 2}, eta=0.0)
    assert torch.equal(reference, no_eta)


@pytest.mark.parametrize(
    "name",
    ["dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece"],
)
def test_flow_sde_samplers_sample_the_gaussian(gaussian, name):
    """SDE samplers leave the ODE path but land in the data distribution: (out - mean)/std is
    standard normal over the 16k elements."""
    mean, std, noise = gaussian
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 90)
    out = samplers.sample(model, name, sigmas, noise, torch.zeros_like(noise), seed=9)
    z = (out - mean) / std
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05, (z.mean(), z.std())
    assert (out - (mean + std * noise)).abs().max() > 1, "it must not just follow the ODE"


@pytest.mark.parametrize("name", ["ddpm", "res_multistep_ancestral"])
def test_variance_exploding_samplers(gaussian, name):
    """ddpm and res_multistep_ancestral read sigma as a variance-exploding sigma on every model,
    as ComfyUI's do: on the VE process they sample the data distribution; on FLUX's flow their
    renoising keeps too much signal, and the spread grows (ComfyUI's behaviour on FLUX too)."""
    mean, std, noise = gaussian
    sigmas = torch.cat([torch.linspace(4.382, -6.215, 200).exp(), torch.zeros(1)])  # 80 .. 0.002
    sampler = samplers.get_sampler(name)
    model = samplers.FlowModel(variance_exploding_gaussian(mean, std), ms.flux_dev())
    z = (sampler(model, noise * sigmas[0], sigmas, extra_args={"seed": 9}) - mean) / std
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05, (z.mean(), z.std())

    flow = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    flow_sigmas = sc.calculate_sigmas(flow.model_sampling, "simple", 90)
    out = samplers.sample(flow, name, flow_sigmas, noise, torch.zeros_like(noise), seed=9)
    z = (out - mean) / std
    assert abs(z.mean().item()) < 0.05 and z.std().item() > 1.3


# --- orders, on a grid that stops short of sigma 0 ------------------------------------------
# On FLUX's schedules the long last step into sigma 0 dominates the error and hides the orders;
# here, in float64, the flow runs from sigma 0.9 to 0.1 on a grid even in half-log-SNR, and the
# exact answer is the Gaussian flow's own marginal map, x(sigma) = (1-sigma) mean + s(sigma) z,
# s(sigma) = sqrt((1-sigma)^2 std^2 + sigma^2).


@pytest.fixture(scope="module")
def short_flow():
    g = torch.Generator().manual_seed(0)
    shape, f64 = (1, 16, 32, 32), torch.float64
    mean = torch.randn(shape, generator=g, dtype=f64) * 0.5
    std = torch.rand(shape, generator=g, dtype=f64) * 0.5 + 0.5
    z = torch.randn(shape, generator=g, dtype=f64)
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())

    def exact(sigma):
        return (1 - sigma) * mean + ((1 - sigma) ** 2 * std**2 + sigma**2).sqrt() * z

    def error(sampler, steps: int, at: int = -1) -> float:
        """max |sampler's result - the exact flow at sigmas[at]|"""
        ends = samplers_core._flow_lambda(torch.tensor([0.9, 0.1], dtype=f64))
        grid = torch.linspace(ends[0].item(), ends[1].item(), steps + 1, dtype=f64)
        sigmas = samplers_core._flow_sigma(grid)
        out = sampler(model, exact(sigmas[0]), sigmas, extra_args={"seed": 1})
        return (out - exact(sigmas[at])).abs().max().item()

    return error


ER_SDE_ODE = partial(samplers.sample_er_sde, noise_scaler=lambda x: x)  # phi(x) = x: no noise

# (sampler, least error(16)/error(32)): about 2 for first order, 4 for second and beyond (the
# multistep methods' first-order start caps them there; their errors are smaller still).
ORDERS = {
    "ipndm": (samplers.sample_ipndm, 4.0),
    "ipndm_v": (samplers.sample_ipndm_v, 4.5),
    "res_multistep": (samplers.sample_res_multistep, 3.5),
    "heunpp2": (samplers.sample_heunpp2, 2.0),
    "gradient_estimation": (samplers.sample_gradient_estimation, 1.7),
    "dpmpp_3m_sde eta=0": (partial(samplers.sample_dpmpp_3m_sde, eta=0.0), 4.0),
    "seeds_2 eta=0": (partial(samplers.sample_seeds_2, eta=0.0), 3.5),
    "seeds_3 eta=0": (partial(samplers.sample_seeds_3, eta=0.0), 5.0),
    "er_sde phi(x)=x": (ER_SDE_ODE, 3.5),
}


@pytest.mark.parametrize("case", list(ORDERS))
def test_convergence_order_short_of_sigma_zero(short_flow, case):
    sampler, ratio = ORDERS[case]
    coarse, fine = short_flow(sampler, 16), short_flow(sampler, 32)
    assert fine < coarse / ratio, (coarse, fine)


def test_higher_orders_are_more_accurate(short_flow):
    """The third-order terms pay: 3M against 2M, SEEDS-3 against SEEDS-2, ER-SDE's third stage."""
    three_m = short_flow(partial(samplers.sample_dpmpp_3m_sde, eta=0.0), 32)
    assert three_m < short_flow(samplers.sample_dpmpp_2m, 32) / 8
    seeds_3 = short_flow(partial(samplers.sample_seeds_3, eta=0.0), 32)
    assert seeds_3 < short_flow(partial(samplers.sample_seeds_2, eta=0.0), 32) / 50
    assert short_flow(ER_SDE_ODE, 32) < 0.85 * short_flow(partial(ER_SDE_ODE, max_stage=2), 32)


# --- DPM-Solver fast and adaptive -----------------------------------------------------------


def counting(model, calls: list):
    def velocity(x, sigma):
        calls.append(float(sigma[0]))
        return model.velocity(x, sigma)

    return samplers.FlowModel(velocity, model.model_sampling)


def test_dpm_fast_spends_one_evaluation_per_step_and_converges(short_flow):
    """n model evaluations (the schedule's step count) over floor(n/3) + 1 solver steps from
    sigmas[0] to the last sigma (here 0.1), third order but at the end: it converges faster than
    second order to the flow at that sigma."""
    sampler = samplers.get_sampler("dpm_fast")
    errors = [short_flow(sampler, n) for n in (12, 24, 48)]
    assert errors[0] < 0.02
    assert errors[1] < errors[0] / 2.5 and errors[2] < errors[1] / 3.5, errors


def test_dpm_fast_steps_evenly_in_log_sigma(gaussian):
    mean, std, noise = gaussian
    calls, reports = [], []
    model = counting(samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev()), calls)
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 9)
    samplers.sample(
        model, "dpm_fast", sigmas, noise, torch.zeros_like(noise), seed=0, callback=reports.append
    )
    assert len(calls) == 9
    # 9 = 3 * 3: orders 3, 3, 2, 1 over 4 steps even in log(sigma) from sigma 1 to sigmas[-2]
    ends = torch.tensor([1.0, float(sigmas[-2])]).log()
    expected = torch.linspace(float(ends[0]), float(ends[1]), 5).exp()[:4]
    assert torch.allclose(torch.stack([r["sigma"] for r in reports]), expected, rtol=1e-5)
    assert [r["i"] for r in reports] == [0, 1, 2, 3]


def test_dpm_adaptive_sets_its_own_steps(short_flow, gaussian):
    """Only the schedule's ends matter; a tighter tolerance costs evaluations and buys accuracy."""
    sampler = samplers.get_sampler("dpm_adaptive")
    default = short_flow(sampler, 6)
    assert default == short_flow(sampler, 40)
    assert default < 0.02
    tight = partial(samplers.sample_dpm_adaptive, rtol=0.005, atol=0.0005)
    assert short_flow(tight, 6) < default / 5
    assert short_flow(partial(samplers.sample_dpm_adaptive, order=2), 6) < 0.1
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        short_flow(partial(samplers.sample_dpm_adaptive, order=4), 6)

    mean, std, noise = gaussian
    counts = {}
    for rtol in (0.05, 0.005):
        calls = []
        model = counting(samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev()), calls)
        sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 20)
        out = samplers.sample(
            model,
            partial(samplers.sample_dpm_adaptive, rtol=rtol),
            sigmas,
            noise,
            torch.zeros_like(noise),
            seed=0,
        )
        counts[rtol] = len(calls)
        # the flow's marginal map at s = sigmas[-2]: (1-s) mean + sqrt((1-s)^2 std^2 + s^2) z
        exact = (1 - sigmas[-2]) * mean + ((1 - sigmas[-2]) ** 2 * std**2 + sigmas[-2] ** 2).sqrt() * noise
        assert (out - exact).abs().max() < 0.05
        assert calls[0] == 1.0 and min(calls) >= float(sigmas[-2]) * 0.999
    assert counts[0.005] > counts[0.05]


# --- SA-Solver ------------------------------------------------------------------------------


def test_sa_solver_weights():
    """Order 1 without noise is DPM-Solver++(1): alpha_t (1 - e^-h); every order integrates the
    polynomials of its degree exactly against (1 + tau^2) e^((1 + tau^2)(lam - lam_t))."""
    f64 = torch.float64
    sigma_t = torch.tensor(0.3, dtype=f64)
    lam_s = samplers_core._flow_lambda(torch.tensor(0.5, dtype=f64))
    lam_t = samplers_core._flow_lambda(sigma_t)
    alpha_t = sigma_t * lam_t.exp()
    (b,) = samplers_solvers._sa_solver_weights(sigma_t, lam_s.reshape(1), lam_s, lam_t, 0.0)
    assert float(b) == pytest.approx(float(alpha_t * -torch.expm1(-(lam_t - lam_s))), rel=1e-12)
    nodes = torch.stack([lam_s - 0.6, lam_s - 0.25, lam_s, lam_t])
    grid = torch.linspace(float(lam_s), float(lam_t), 200001, dtype=f64)
    for tau in (0.0, 1.0):
        k = 1 + tau**2
        weights = samplers_solvers._sa_solver_weights(sigma_t, nodes, lam_s, lam_t, tau) / alpha_t
        for degree in range(4):
            integrand = k * torch.exp(k * (grid - lam_t)) * grid**degree
            assert float((weights * nodes**degree).sum()) == pytest.approx(
                float(torch.trapezoid(integrand, grid)), rel=1e-6
            )


SA_ODE = partial(samplers.sample_sa_solver, tau_func=lambda sigma: 0.0)


@pytest.mark.parametrize("pece", [False, True])
def test_sa_solver_without_noise_is_a_high_order_ode_solver(short_flow, pece):
    """tau = 0 everywhere: the Adams predictor-corrector of orders 3 and 4 converges fast. On a
    schedule that ends above 0 it returns, as ComfyUI's does, the corrected state at the
    next-to-last sigma (the last prediction is dropped), so that is what it is compared with."""
    sampler = partial(SA_ODE, use_pece=pece)
    coarse, fine = short_flow(sampler, 16, at=-2), short_flow(sampler, 32, at=-2)
    assert coarse < 1e-3 and fine < coarse / 10, (coarse, fine)
    assert short_flow(sampler, 32, at=-1) > 100 * fine  # not the state at the last sigma
    lower = partial(sampler, predictor_order=2, corrector_order=2)
    assert short_flow(lower, 32, at=-2) > 5 * fine  # the higher orders pay


def test_sa_solver_noise_follows_tau(gaussian):
    mean, std, noise = gaussian
    model = samplers.FlowModel(gaussian_flow(mean, std), ms.flux_dev())
    sigmas = sc.calculate_sigmas(model.model_sampling, "simple", 10)
    latent = torch.zeros_like(noise)
    runs = [samplers.sample(model, SA_ODE, sigmas, noise, latent, seed=seed) for seed in (1, 2)]
    assert torch.equal(*runs), "no noise without tau"
    runs = [samplers.sample(model, "sa_solver", sigmas, noise, latent, seed=seed) for seed in (1, 2)]
    assert not torch.equal(*runs)
    # ComfyUI's default tau: 1 only between percent_to_sigma(0.2) and percent_to_sigma(0.8)
    ends = samplers_core._offset_first_sigma(model, sigmas)
    seen = []
    samplers.sample_sa_solver(model, noise, ends, tau_func=lambda s: seen.append(float(s)) or 0.0)
    assert seen == pytest.approx([float(s) for s in ends[1:-1]])
