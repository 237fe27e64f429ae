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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from nodes.comfy.guiders import Velocity
from nodes.comfy.model_sampling import (
    ModelSampling,
    inverse_noise_scaling,
    latent_in,
    latent_out,
    noise_scaling,
    to_denoised,
)
from nodes.comfy.noise import BrownianTreeNoiseSampler, default_noise_sampler


@dataclass
class FlowModel:
    """What samplers call: the (guided) velocity of the flow, and the model's sigma table."""

    velocity: Velocity
    model_sampling: ModelSampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.velocity(x, sigma)


def _seed(extra_args: dict | None) -> int | None:
    return (extra_args or {}).get("seed")


def _batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sigma for each image of the batch, as k-diffusion passes it (`sigma * s_in`)."""
    return sigma * x.new_ones([x.shape[0]])


def _report(callback, x, i, sigma, denoised):
    """k-diffusion's progress report (no churn here, so sigma_hat is sigma)."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _evaluate(model, x, sigma):
    """Velocity and denoised estimate at one point."""
    v = model(x, _batch(x, sigma))
    return v, to_denoised(x, v, sigma)


# --- first and second order ODE steps (Karras et al. 2022, "Elucidating the Design Space") ---


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Karras et al. 2022, Algorithm 2 without churn: x += (sigma_next - sigma) * dx/dsigma.
    On a flow model dx/dsigma is the velocity, so this is FluxPipeline's Euler step."""
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        x = x + v * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Karras et al. 2022, Algorithm 1 (Heun's 2nd order method); an Euler step into sigma 0."""
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + v * dt
        else:
            v_2 = model(x + v * dt, _batch(x, sigmas[i + 1]))
            x = x + (v + v_2) / 2 * dt
    return x


def _dpm_2_step(model, x, v, sigma, sigma_to):
    """DPM-Solver-2 as in Karras et al. 2022 (Algorithm 2's midpoint variant): evaluate at the
    geometric mean of the two sigmas, step the whole way with that derivative."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    v_2 = model(x + v * (sigma_mid - sigma), _batch(x, sigma_mid))
    return x + v_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None):
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + v * (sigmas[i + 1] - sigmas[i])
        else:
            x = _dpm_2_step(model, x, v, sigmas[i], sigmas[i + 1])
    return x


# --- ancestral steps on a rectified flow ----------------------------------------------------


def _flow_ancestral_step(sigma, sigma_next, eta: float):
    """Where a rectified-flow ancestral step goes: deterministically down to sigma_down, then
    rescaled by alpha_next/alpha_down (alpha = 1 - sigma) and renoised so that the marginal noise
    level is sigma_next again: renoise^2 = sigma_next^2 - (sigma_down * alpha_next/alpha_down)^2.
    eta = 1 gives sigma_down = sigma_next^2 / sigma (ComfyUI's *_RF samplers)."""
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0
):
    """Euler ancestral (Ho et al. 2020's ancestral sampling with Euler steps), flow form."""
    noise = default_noise_sampler(x, _seed(extra_args))
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down, rescale, renoise = _flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        ratio = sigma_down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0
):
    """DPM-Solver-2 steps down to sigma_down, then flow renoising (see _flow_ancestral_step)."""
    noise = default_noise_sampler(x, _seed(extra_args))
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        sigma_down, rescale, renoise = _flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + v * (sigma_down - sigmas[i])
        else:
            x = _dpm_2_step(model, x, v, sigmas[i], sigma_down)
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0
):
    """DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", Algorithm 1, single-step 2nd order) in
    the flow's half-log-SNR lambda = log((1 - sigma)/sigma), towards sigma_down, then renoised.
    At sigma = 1 (lambda = -inf) the midpoint is taken at sigma 0.9999, as ComfyUI does."""
    noise = default_noise_sampler(x, _seed(extra_args))
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        v, denoised = _evaluate(model, x, sigma)
        _report(callback, x, i, sigma, denoised)
        sigma_down, rescale, renoise = _flow_ancestral_step(sigma, sigmas[i + 1], eta)
        if sigmas[i + 1] == 0:
            x = x + v * (sigma_down - sigma)
            continue
        if sigma == 1.0:
            sigma_s = 0.9999
        else:
            lam, lam_down = _flow_lambda(sigma), _flow_lambda(sigma_down)
            sigma_s = _flow_sigma(lam + (lam_down - lam) / 2)
        ratio_s = sigma_s / sigma
        u = ratio_s * x + (1 - ratio_s) * denoised
        _, denoised_2 = _evaluate(
            model, u, torch.as_tensor(sigma_s, dtype=sigmas.dtype, device=sigmas.device)
        )
        ratio_down = sigma_down / sigma
        x = ratio_down * x + (1 - ratio_down) * denoised_2
        if eta > 0:
            x = rescale * x + noise(sigma, sigmas[i + 1]) * s_noise * renoise
    return x


# --- DPM-Solver++ multistep and SDE (Lu et al. 2022, "DPM-Solver++") -----------------------


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2, with t = -log(sigma) as ComfyUI uses it on
    every model (the variance-exploding form; its first-order step is exactly DDIM/Euler on a
    flow, the second-order correction differs from the flow-lambda form)."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        estimate = denoised
        if old_denoised is not None and sigmas[i + 1] != 0:
            r = (t + sigmas[i - 1].log()) / h  # h_last / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * estimate
        old_denoised = denoised
    return x


def _flow_lambda(sigma):
    """Half log-SNR of a rectified flow: log(alpha/sigma) with alpha = 1 - sigma."""
    return torch.as_tensor(sigma).logit().neg()


def _flow_sigma(lam):
    return torch.as_tensor(lam).neg().sigmoid()


def _offset_first_sigma(model, sigmas):
    """A first sigma of 1 (infinite lambda) moved to percent_to_sigma(1e-4), as ComfyUI's
    log-SNR samplers do on flows."""
    if len(sigmas) > 1 and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model.model_sampling.percent_to_sigma(1e-4)
    return sigmas


def _sde_setup(model, x, sigmas, extra_args, cpu: bool):
    """The Brownian tree over the schedule's range, and the schedule with a first sigma of 1
    (infinite lambda) moved to percent_to_sigma(1e-4), as ComfyUI's SDE samplers do on flows."""
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    noise = BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=_seed(extra_args), cpu=cpu)
    return noise, _offset_first_sigma(model, sigmas)


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    solver_type="midpoint",
    cpu_tree=True,
):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, section 5 / appendix; k-diffusion's form) in the
    flow's half-log-SNR, with Brownian-tree noise; `solver_type` heun or midpoint."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', not {solver_type!r}")
    noise, sigmas = _sde_setup(model, x, sigmas, extra_args, cpu_tree)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = _flow_lambda(sigmas[i]), _flow_lambda(sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    phi = (-h_eta).expm1().neg() / (-h_eta) + 1
                    x = x + alpha_t * phi * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + noise(sigmas[i], sigmas[i + 1]) * scale
        old_denoised, h_last = denoised, h
    return x


def _ancestral_split(sigma_from, sigma_to, eta: float):
    """Karras-style ancestral split of a step from sigma_from to sigma_to: (sigma_down, sigma_up)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


@torch.no_grad()
def sample_dpmpp_sde(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, r=0.5, cpu_tree=True
):
    """DPM-Solver++ stochastic single-step 2nd order (Lu et al. 2022; k-diffusion's dpmpp_sde) in
    the flow's half-log-SNR: an intermediate point at lambda + r*h, both sub-steps renoised from
    the Brownian tree."""
    if len(sigmas) <= 1:
        return x
    noise, sigmas = _sde_setup(model, x, sigmas, extra_args, cpu_tree)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _flow_lambda(sigmas[i]), _flow_lambda(sigmas[i + 1])
        h = lam_t - lam_s
        lam_s1 = lam_s + r * h
        sigma_s1 = _flow_sigma(lam_s1)
        alpha_s, alpha_s1, alpha_t = (
            sigmas[i] * lam_s.exp(),
            sigma_s1 * lam_s1.exp(),
            sigmas[i + 1] * lam_t.exp(),
        )
        # Step 1: to lambda_s1, renoised.
        sd, su = _ancestral_split(lam_s.neg().exp(), lam_s1.neg().exp(), eta)
        h_ = -sd.log() - lam_s
        x_2 = (alpha_s1 / alpha_s) * (-h_).exp() * x - alpha_s1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s1 * noise(sigmas[i], sigma_s1) * s_noise * su
        _, denoised_2 = _evaluate(model, x_2, sigma_s1)
        # Step 2: to lambda_t with the combined estimate, renoised.
        sd, su = _ancestral_split(lam_s.neg().exp(), lam_t.neg().exp(), eta)
        h_ = -sd.log() - lam_s
        combined = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * combined
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


# --- consistency and multistep samplers -----------------------------------------------------


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Latent Consistency Model sampling (Luo et al. 2023, Algorithm 1): jump to the denoised
    estimate, then renoise it to the next sigma with the flow's forward process."""
    noise = default_noise_sampler(x, _seed(extra_args))
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise_scaling(sigmas[i + 1], noise(sigmas[i], sigmas[i + 1]), x)
    return x


def _lagrange_integrals(nodes: np.ndarray, start: float, end: float) -> list[float]:
    """integral from start to end of each Lagrange basis polynomial over `nodes` (exact)."""
    P = np.polynomial.Polynomial
    integrals = []
    for j, node in enumerate(nodes):
        basis = P([1.0])
        for k, other in enumerate(nodes):
            if k != j:
                basis = basis * P([-other, 1.0]) / (node - other)
        antiderivative = basis.integ()
        integrals.append(float(antiderivative(end) - antiderivative(start)))
    return integrals


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (Adams-Bashforth in sigma, as in Karras et al.'s k-diffusion): the last
    `order` derivatives extrapolated by Lagrange polynomials and integrated over the step; the
    last step into sigma 0 returns the denoised estimate."""
    sigmas_cpu = sigmas.detach().cpu().double().numpy()
    history = []
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        history = (history + [v])[-order:]
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        n = len(history)
        coeffs = _lagrange_integrals(sigmas_cpu[i - np.arange(n)], sigmas_cpu[i], sigmas_cpu[i + 1])
        x = x + sum(c * d for c, d in zip(coeffs, reversed(history), strict=True))
    return x


# DEIS "tAB" maps a variance-exploding sigma to a VP time t through the VP-SDE with the EDM
# range (sigma 0.002..80, epsilon 1e-3), as ComfyUI's deis does whatever the model.
_DEIS_SIGMA_MIN, _DEIS_SIGMA_MAX, _DEIS_EPS = 0.002, 80.0, 1e-3


def _deis_vp_parameters() -> tuple[float, float]:
    log_min, log_max = np.log(_DEIS_SIGMA_MIN**2 + 1), np.log(_DEIS_SIGMA_MAX**2 + 1)
    beta_d = 2 * (log_min / _DEIS_EPS - log_max) / (_DEIS_EPS - 1)
    return beta_d, log_max - 0.5 * beta_d


def _deis_coefficients(sigmas: np.ndarray, max_order: int, points: int = 10000) -> list[list[float]]:
    """tAB-DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", eq. 15): C_ij = integral over the step of dsigma/dt times the Lagrange basis
    polynomial of the previous VP times, as a Riemann sum over `points` points like ComfyUI's."""
    beta_d, beta_min = _deis_vp_parameters()
    t = (np.sqrt(beta_min**2 + 2 * beta_d * np.log(sigmas**2 + 1)) - beta_min) / beta_d
    coefficients = []
    for i in range(len(sigmas) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] <= 0:
            coefficients.append([])
            continue
        taus = np.linspace(t[i], t[i + 1], points)
        alpha = np.exp(-0.5 * taus**2 * beta_d - taus * beta_min)
        dsigma_dt = 0.5 * (taus * beta_d + beta_min) / np.sqrt(alpha * (1 - alpha))
        previous = t[[i - k for k in range(order)]]
        row = []
        for j in range(order):
            basis = np.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis *= (taus - previous[k]) / (previous[j] - previous[k])
            row.append(float(np.sum(dsigma_dt * basis) * (t[i + 1] - t[i]) / points))
        coefficients.append(row)
    return coefficients


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3):
    """DEIS multistep (tAB, up to 3rd order): x += sum_j C_ij * d_(i-j); Euler at the first step
    and into sigma 0."""
    coefficients = _deis_coefficients(sigmas.detach().cpu().double().numpy(), max_order)
    history = []  # derivatives, newest last
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if not coefficients[i]:
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        else:
            terms = zip(coefficients[i], [v, *reversed(history)], strict=False)
            x = x + sum(c * d for c, d in terms)
        history = (history + [v])[-(max_order - 1) :]
    return x


# --- UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework") -------------
# ComfyUI runs UniPC in variance-preserving form on x / sqrt(1 + sigma^2), treating sigma as a
# variance-exploding sigma whatever the model; with data prediction that is the same update as
# below in sigma itself (lambda = -log sigma): x_t = (sigma_t/sigma_s) x - expm1(-h) D - B(h)*sum.
# ComfyUI evaluates lambda in float32 through 1 - exp(log(1/(1+sigma^2))), which loses digits at
# its last sigma 0.001; we take -log(sigma) directly, so the two differ there by rounding.

UNIPC_LAST_SIGMA = 0.001  # UniPC cannot reach sigma 0 (lambda = inf): it stops here


def _unipc_weights(rks: torch.Tensor, hh: float, order: int, variant: str):
    """The B(h) system of UniPC (section 3.3): R[k] = rks^k, b[k] = k! * phi_(k+1)(hh) / B(hh)."""
    h_phi_1 = float(np.expm1(hh))
    b_h = hh if variant == "bh1" else h_phi_1
    rows, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for k in range(1, order + 1):
        rows.append(rks ** (k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(b, dtype=torch.float64), h_phi_1, b_h


def _unipc_update(model, x, history, sigma_t, order: int, variant: str, use_corrector: bool):
    """One UniPC step from history[-1] to sigma_t: predictor of `order`, then (unless the last
    step) the corrector, whose model evaluation the next step reuses. history holds
    (sigma, denoised) pairs, newest last."""
    sigma_0, m_0 = history[-1]
    lam_0 = -float(sigma_0.log())
    h = -float(sigma_t.log()) - lam_0
    rks, d1s = [], []
    for i in range(1, order):
        sigma_i, m_i = history[-(i + 1)]
        rk = (-float(sigma_i.log()) - lam_0) / h
        rks.append(rk)
        d1s.append((m_i - m_0) / rk)
    rks = torch.tensor(rks + [1.0], dtype=torch.float64)
    R, b, h_phi_1, b_h = _unipc_weights(rks, -h, order, variant)
    x_base = (sigma_t / sigma_0) * x - h_phi_1 * m_0
    x_t = x_base
    if d1s:
        rhos_p = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
        x_t = x_base - b_h * sum(float(r) * d for r, d in zip(rhos_p, d1s, strict=True))
    if not use_corrector:
        return x_t, None
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
    _, m_t = _evaluate(model, x_t, sigma_t)
    correction = sum((float(r) * d for r, d in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
    return x_base - b_h * (correction + rhos_c[-1] * (m_t - m_0)), m_t


@torch.no_grad()
def sample_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None, variant="bh1"):
    """UniPC multistep, order min(3, steps - 1), lower orders for the first and last steps, the
    corrector after every step but the last (UniPC's Algorithm 3 with B(h) = h or e^h - 1)."""
    reaches_zero = bool(sigmas[-1] == 0)
    sigmas = sigmas.clone()
    if reaches_zero:
        sigmas[-1] = UNIPC_LAST_SIGMA
    steps = len(sigmas) - 1
    order = min(3, steps - 1)
    history = []
    for index in range(steps):
        if index == 0:
            history = [(sigmas[0], _evaluate(model, x, sigmas[0])[1])]
        elif index < order:  # warm-up: orders 1 .. order-1
            x, m = _unipc_update(model, x, history, sigmas[index], index, variant, True)
            history.append((sigmas[index], m))
        else:
            for step in range(index, index + 1 + (index == steps - 1)):  # the last index takes two
                step_order = min(order, steps + 1 - step)
                x, m = _unipc_update(model, x, history, sigmas[step], step_order, variant, step != steps)
                m = history[-1][1] if m is None else m  # the last step evaluates nothing
                history = history[1:] + [(sigmas[step], m)]
        _report(callback, x, index, sigmas[index], history[-1][1])
    # ComfyUI writes 0.001 into the caller's sigmas, so its final 1/(1 - sigma) rescaling
    # (model_sampling.inverse_noise_scaling) divides by 0.999 where it meant 1; so do we.
    return x / (1.0 - UNIPC_LAST_SIGMA) if reaches_zero else x


@torch.no_grad()
def sample_unipc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return sample_unipc(model, x, sigmas, extra_args, callback, disable, variant="bh2")


# --- more of ComfyUI's samplers -------------------------------------------------------------


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, cpu_tree=True
):
    """DPM-Solver++(3M) SDE (Lu et al. 2022, "DPM-Solver++": the multistep data-prediction
    update, here third order, with the SDE's e^(-h*eta) decay and fresh noise; k-diffusion's form)
    in the flow's half-log-SNR, Brownian-tree noise. First step first order, second step 2M; then
    the first and second divided differences of the last three denoised estimates, weighted by
    phi_2 = expm1(-h_eta)/h_eta + 1 and phi_3 = phi_2/h_eta - 1/2 (with h_eta = (1 + eta) h)."""
    if len(sigmas) <= 1:
        return x
    noise, sigmas = _sde_setup(model, x, sigmas, extra_args, cpu_tree)
    history = []  # (denoised, h) of the previous steps, newest first, at most two
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = _flow_lambda(sigmas[i]), _flow_lambda(sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (-h_eta).expm1() * denoised
            phi_2 = (-h_eta).expm1() / h_eta + 1
            if len(history) == 2:
                (d_1, h_1), (d_2, h_2) = history
                r_0, r_1 = h_1 / h, h_2 / h
                slope_0 = (denoised - d_1) / r_0
                slope_1 = (d_1 - d_2) / r_1
                second = (slope_0 - slope_1) / (r_0 + r_1)
                first = slope_0 + second * r_0
                phi_3 = phi_2 / h_eta - 0.5
                x = x + alpha_t * (phi_2 * first - phi_3 * second)
            elif len(history) == 1:
                d_1, h_1 = history[0]
                x = x + alpha_t * phi_2 * (denoised - d_1) * (h / h_1)
            if eta > 0 and s_noise > 0:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + noise(sigmas[i], sigmas[i + 1]) * scale
        history = [(denoised, h), *history][:2]  # h is None only after the last step
    return x


# iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
# section 5: PNDM's linear multistep with lower-order warm-up instead of Runge-Kutta steps):
# Adams-Bashforth weights for equal steps, applied whatever the step sizes. Newest first.
_ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM in sigma: x += (sigma_next - sigma) * sum_j AB_j * v_(i-j), order min(i+1, 4); the
    step into sigma 0 returns the denoised estimate."""
    history = []  # velocities, newest first
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        history = [v, *history][:max_order]
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        weights = _ADAMS_BASHFORTH[len(history) - 1]
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(w * d for w, d in zip(weights, history, strict=True))
    return x


def _ipndm_v_weights(h: list[float]) -> list[float]:
    """The variable-step iPNDM weights of Zhou et al. 2024 ("Fast ODE-based Sampling for Diffusion
    Models in Around 5 Steps", diff-sampler's iPNDM_v, Apache-2.0), h = [h_n, h_(n-1), ...] the
    current and previous sigma steps (as many as the order - 1 previous ones). They reduce to
    Adams-Bashforth's on equal steps."""
    if len(h) == 1:
        return [1.0]
    ratio = h[0] / h[1]
    weights = [1 + ratio / 2, -ratio / 2]
    if len(h) == 2:
        return weights
    h0, h1, h2 = h[0], h[1], h[2]
    t1 = (1 - h0 / (3 * (h0 + h1)) * h0 * (h0 + h1) / (h1 * (h1 + h2))) / 2
    weights = [weights[0] + t1, weights[1] - (1 + h1 / h2) * t1, t1 * h1 / h2]
    if len(h) == 3:
        return weights
    h3 = h[3]
    span_0, span_1 = h0 + h1, h0 + h1 + h2
    t2 = (
        ((1 - h0 / (3 * span_0)) / 2 + (1 - h0 / (2 * span_0)) * h0 / (6 * span_1))
        * (h0 * span_0 * span_1)
        / (h1 * (h1 + h2) * (h1 + h2 + h3))
    )
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [
        weights[0] + t2,
        weights[1] - (1 + h1 / h2 + q) * t2,
        weights[2] + (h1 / h2 + q * (1 + h2 / h3)) * t2,
        -t2 * q * h1 / h2,
    ]


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    """iPNDM with variable step sizes (see _ipndm_v_weights), order min(i+1, 4); the step into
    sigma 0 returns the denoised estimate."""
    history = []  # velocities, newest first
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        history = [v, *history][:max_order]
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        steps = [float(sigmas[i + 1 - k] - sigmas[i - k]) for k in range(len(history))]
        weights = _ipndm_v_weights(steps)
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(w * d for w, d in zip(weights, history, strict=True))
    return x


@torch.no_grad()
def sample_res_multistep(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0
):
    """RES second-order multistep (Zhang et al. 2023, "Improved Order Analysis and Design of
    Exponential Integrator for Diffusion Models", arXiv 2308.02157, the multistep scheme with
    b_1 = phi_1 - phi_2/c_2, b_2 = phi_2/c_2) in t = -log(sigma) as ComfyUI uses it on every model;
    Euler at the first step and into sigma 0. With eta > 0 each step goes to the Karras ancestral
    sigma_down and adds sigma_up of fresh noise (ComfyUI's VE-style split, also on flows)."""
    noise = default_noise_sampler(x, _seed(extra_args))
    old_denoised, old_sigma_down = None, None
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        sigma_down, sigma_up = _ancestral_split(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            x = x + v * (sigma_down - sigmas[i])
        else:
            t, t_next = -sigmas[i].log(), -torch.as_tensor(sigma_down).log()
            h = t_next - t
            # c_2 as ComfyUI takes it: from the previous step's sigma_down to the previous sigma
            c_2 = (old_sigma_down.log() - sigmas[i - 1].log()) / h
            phi_1 = (-h).expm1() / -h
            phi_2 = (phi_1 - 1) / -h
            b_2 = torch.nan_to_num(phi_2 / c_2, nan=0.0)
            b_1 = torch.nan_to_num(phi_1 - phi_2 / c_2, nan=0.0)
            x = (-h).exp() * x + h * (b_1 * denoised + b_2 * old_denoised)
        if sigmas[i + 1] > 0 and eta > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = denoised, torch.as_tensor(sigma_down)
    return x


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Heun++ (Carzit's sd-webui-samplers-scheduler, MIT, as ComfyUI's heunpp2): an Euler
    predictor over the next one or two steps, and the step taken with a weighted mean of the
    derivatives there, weights sigma_(i+1)/(3 sigma_0) and sigma_(i+2)/(3 sigma_0) (over
    2 sigma_0 with two points), the rest on the current derivative; Euler on the last step."""
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + v * dt
            continue
        x_2 = x + v * dt
        v_2 = model(x_2, _batch(x, sigmas[i + 1]))
        if sigmas[i + 2] == s_end:
            w_2 = sigmas[i + 1] / (2 * sigmas[0])
            slope = (1 - w_2) * v + w_2 * v_2
        else:
            x_3 = x_2 + v_2 * (sigmas[i + 2] - sigmas[i + 1])
            v_3 = model(x_3, _batch(x, sigmas[i + 2]))
            w_2, w_3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            slope = (1 - w_2 - w_3) * v + w_2 * v_2 + w_3 * v_3
        x = x + slope * dt
    return x


@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DDPM ancestral sampling (Ho et al. 2020, eq. 11 and the posterior variance beta-tilde) as
    ComfyUI runs it on every model: sigma read as a variance-exploding sigma, alpha-bar =
    1/(1 + sigma^2), x scaled to x/sqrt(1 + sigma^2), and the noise prediction taken as
    (x - x0)/sigma, which on a flow is the velocity. Into sigma 0 it returns the denoised estimate."""
    noise = default_noise_sampler(x, _seed(extra_args))
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        abar, abar_next = 1 / (sigma**2 + 1), 1 / (sigma_next**2 + 1)
        alpha = abar / abar_next
        x_vp = x / (1 + sigma**2).sqrt()
        mean = (x_vp - (1 - alpha) * v / (1 - abar).sqrt()) / alpha.sqrt()
        if sigma_next > 0:
            spread = ((1 - alpha) * (1 - abar_next) / (1 - abar)).sqrt()
            x = (mean + spread * noise(sigma, sigma_next)) * (1 + sigma_next**2).sqrt()
        else:
            x = mean
    return x


@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0):
    """Gradient estimation (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models
    from an Optimization Perspective", Algorithm 2): Euler with the derivative extrapolated,
    d + (gamma - 1)(d - d_previous), from the second step on; into sigma 0 the denoised estimate."""
    old_v = None
    for i in range(len(sigmas) - 1):
        v, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + v * dt
            if old_v is not None:
                x = x + (ge_gamma - 1) * (v - old_v) * dt
        old_v = v
    return x


def _er_sde_noise_scaler(x):
    """ER-SDE's default noise scale function, ComfyUI's: x (e^(x^0.3) + 10)."""
    return x * ((x**0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_noise=1.0,
    noise_scaler=None,
    max_stage=3,
):
    """ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the Solution Space of Extended Reverse-Time
    SDEs for Diffusion Models", arXiv 2309.06169, VP form, Algorithm 3) in the flow's
    lambda = sigma/alpha: the first-order step scaled by r = phi(lambda_t)/phi(lambda_s), and
    second and third stages from divided differences of the denoised estimates, their integrals of
    1/phi taken as 200-point Riemann sums as in ComfyUI; fresh noise of
    alpha_t sqrt(lambda_t^2 - lambda_s^2 r^2) each step. `noise_scaler` is the paper's phi
    (default ComfyUI's x (e^(x^0.3) + 10)); phi(x) = x adds no noise: the ODE solver."""
    noise = default_noise_sampler(x, _seed(extra_args))
    scaler = _er_sde_noise_scaler if noise_scaler is None else noise_scaler
    points = torch.arange(0, 200, dtype=torch.float32, device=x.device)
    sigmas = _offset_first_sigma(model, sigmas)
    lambdas = _flow_lambda(sigmas).neg().exp()  # sigma / alpha
    old_denoised, old_slope = None, None
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lambdas[i], lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lam_s, sigmas[i + 1] / lam_t
            scale_t = scaler(lam_t)
            r = scale_t / scaler(lam_s)
            x = (alpha_t / alpha_s) * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                d_lam = lam_t - lam_s
                spacing = -d_lam / 200
                positions = lam_t + points * spacing
                scaled = scaler(positions)
                slope = (denoised - old_denoised) / (lam_s - lambdas[i - 1])
                x = x + alpha_t * (d_lam + (1 / scaled).sum() * spacing * scale_t) * slope
                if stage >= 3:
                    integral = ((positions - lam_s) / scaled).sum() * spacing
                    curvature = (slope - old_slope) / ((lam_s - lambdas[i - 2]) / 2)
                    x = x + alpha_t * (d_lam**2 / 2 + integral * scale_t) * curvature
                old_slope = slope
            if s_noise > 0:
                spread = (lam_t**2 - lam_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x


def _seeds_stage(x, sigma_from, sigma_to, fraction, h, eta, estimate):
    """One exponential (data-prediction) stage of SEEDS over `fraction` of the step h in lambda:
    (sigma_to/sigma_from) e^(-fraction h eta) x - alpha_to (h phi_1)(-fraction h (1 + eta)) estimate."""
    alpha_to = sigma_to * _flow_lambda(sigma_to).exp()
    return (
        sigma_to / sigma_from * (-fraction * h * eta).exp() * x
        - alpha_to * (-fraction * h * (eta + 1)).expm1() * estimate
    )


def _seeds_noise(previous, noise, sigma_a, sigma_b, segment, h, eta):
    """SEEDS' correlated noise: the previous stage's noise decayed over the segment, plus fresh
    noise for the rest of the variance (so each stage sees the same Brownian path)."""
    decay = segment * h * eta
    fresh = decay.mul(2).expm1().neg().sqrt() * noise(sigma_a, sigma_b)
    return fresh if previous is None else previous * decay.exp() + fresh


@torch.no_grad()
def sample_seeds_2(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, r=0.5
):
    """SEEDS-2 (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality
    Sampling from Diffusion Models", NeurIPS 2023; VP data prediction, 2 stages) in the flow's
    half-log-SNR: a stage to lambda_s + r h, then the full step with the denoised estimates
    blended by 1/(2r); eta = 0 is the deterministic exponential integrator."""
    noise = default_noise_sampler(x, _seed(extra_args))
    inject = eta > 0 and s_noise > 0
    sigmas = _offset_first_sigma(model, sigmas)
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        lam_s, lam_t = _flow_lambda(sigma), _flow_lambda(sigma_next)
        h = lam_t - lam_s
        sigma_1 = _flow_sigma(torch.lerp(lam_s, lam_t, r))
        x_2 = _seeds_stage(x, sigma, sigma_1, r, h, eta, denoised)
        if inject:
            sde = _seeds_noise(None, noise, sigma, sigma_1, -r, h, eta)
            x_2 = x_2 + sde * sigma_1 * s_noise
        _, denoised_2 = _evaluate(model, x_2, sigma_1)
        x = _seeds_stage(x, sigma, sigma_next, 1.0, h, eta, torch.lerp(denoised, denoised_2, 1 / (2 * r)))
        if inject:
            sde = _seeds_noise(sde, noise, sigma_1, sigma_next, r - 1, h, eta)
            x = x + sde * sigma_next * s_noise
    return x


@torch.no_grad()
def sample_seeds_3(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, r_1=1 / 3, r_2=2 / 3
):
    """SEEDS-3 (Gonzalez et al. 2023, as seeds_2, 3 stages at lambda_s + r_1 h and + r_2 h, the
    second and last with phi_2 weights: Runge-Kutta-type exponential stages)."""
    noise = default_noise_sampler(x, _seed(extra_args))
    inject = eta > 0 and s_noise > 0
    sigmas = _offset_first_sigma(model, sigmas)
    for i in range(len(sigmas) - 1):
        _, denoised = _evaluate(model, x, sigmas[i])
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        lam_s, lam_t = _flow_lambda(sigma), _flow_lambda(sigma_next)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        sigma_1 = _flow_sigma(torch.lerp(lam_s, lam_t, r_1))
        sigma_2 = _flow_sigma(torch.lerp(lam_s, lam_t, r_2))
        x_2 = _seeds_stage(x, sigma, sigma_1, r_1, h, eta, denoised)
        if inject:
            sde = _seeds_noise(None, noise, sigma, sigma_1, -r_1, h, eta)
            x_2 = x_2 + sde * sigma_1 * s_noise
        _, denoised_2 = _evaluate(model, x_2, sigma_1)
        # stage 2: h phi_1 and h phi_2 weights at -r_2 h_eta (h phi_2(z) = (e^z - 1 - z)/z)
        z = -r_2 * h_eta
        a_2 = r_2 / r_1 * ((z.expm1() - z) / z)
        a_1 = z.expm1() - a_2
        alpha_2 = sigma_2 * _flow_lambda(sigma_2).exp()
        x_3 = sigma_2 / sigma * (-r_2 * h * eta).exp() * x - alpha_2 * (a_1 * denoised + a_2 * denoised_2)
        if inject:
            sde = _seeds_noise(sde, noise, sigma_1, sigma_2, r_1 - r_2, h, eta)
            x_3 = x_3 + sde * sigma_2 * s_noise
        _, denoised_3 = _evaluate(model, x_3, sigma_2)
        z = -h_eta
        b_3 = ((z.expm1() - z) / z) / r_2
        b_1 = z.expm1() - b_3
        alpha_t = sigma_next * lam_t.exp()
        x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * (b_1 * denoised + b_3 * denoised_3)
        if inject:
            sde = _seeds_noise(sde, noise, sigma_2, sigma_next, r_2 - 1, h, eta)
            x = x + sde * sigma_next * s_noise
    return x


# --- DPM-Solver fast and adaptive (Lu et al. 2022, "DPM-Solver", arXiv 2206.00927) ----------
# As ComfyUI's KSampler runs them: they take only the ends of the schedule, from sigmas[0] down
# to the last sigma above 0 (sigmas[-2] when the schedule ends at 0), and stop there without the
# final jump to sigma 0; the steps in between are their own. In t = -log(sigma) (the
# variance-exploding form, alpha = 1), the noise prediction being the velocity on a flow. With a
# KSampler eta is 0 (nothing can set it), so they are deterministic; only that case is here.


def _dpm_solver_ends(sigmas):
    sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    return -sigmas[0].log(), -sigma_min.log()


def _dpm_solver_eps(model, x, t):
    return model(x, _batch(x, t.neg().exp()))


def _dpm_solver_1(x, t, t_next, eps):
    """DPM-Solver-1 (eq. 3.7): x - sigma_next (e^h - 1) eps."""
    return x - t_next.neg().exp() * (t_next - t).expm1() * eps


def _dpm_solver_2(model, x, t, t_next, eps, r_1, eps_1=None):
    """DPM-Solver-2 (Algorithm 1) with its intermediate point at t + r_1 h; returns the step and
    the intermediate evaluation (which DPM-Solver-3 with r_1 = 1/3 shares)."""
    h = t_next - t
    s_1 = t + r_1 * h
    if eps_1 is None:
        u_1 = x - s_1.neg().exp() * (r_1 * h).expm1() * eps
        eps_1 = _dpm_solver_eps(model, u_1, s_1)
    sigma_next = t_next.neg().exp()
    return x - sigma_next * h.expm1() * eps - sigma_next / (2 * r_1) * h.expm1() * (eps_1 - eps), eps_1


def _dpm_solver_3(model, x, t, t_next, eps, eps_1=None):
    """DPM-Solver-3 (Algorithm 2, r_1 = 1/3, r_2 = 2/3)."""
    r_1, r_2 = 1 / 3, 2 / 3
    h = t_next - t
    if eps_1 is None:
        s_1 = t + r_1 * h
        eps_1 = _dpm_solver_eps(model, x - s_1.neg().exp() * (r_1 * h).expm1() * eps, s_1)
    s_2 = t + r_2 * h
    sigma_2 = s_2.neg().exp()
    phi = (r_2 * h).expm1()
    u_2 = x - sigma_2 * phi * eps - sigma_2 * (r_2 / r_1) * (phi / (r_2 * h) - 1) * (eps_1 - eps)
    eps_2 = _dpm_solver_eps(model, u_2, s_2)
    sigma_next = t_next.neg().exp()
    return x - sigma_next * h.expm1() * eps - sigma_next / r_2 * (h.expm1() / h - 1) * (eps_2 - eps)


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver-fast (section 3.4): as many model evaluations as the schedule has steps, spent
    on floor(n/3) + 1 steps even in t, third order but for the last one or two (orders 3..3,2,1
    when 3 divides n, else 3..3,n mod 3). One report per solver step, so fewer than n."""
    if len(sigmas) <= 1:
        return x
    t_start, t_end = _dpm_solver_ends(sigmas)
    n = len(sigmas) - 1
    m = n // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, dtype=sigmas.dtype, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        eps = _dpm_solver_eps(model, x, t)
        _report(callback, x, i, t.neg().exp(), to_denoised(x, eps, t.neg().exp()))
        if order == 1:
            x = _dpm_solver_1(x, t, t_next, eps)
        elif order == 2:
            x, _ = _dpm_solver_2(model, x, t, t_next, eps, 1 / 2)
        else:
            x = _dpm_solver_3(model, x, t, t_next, eps)
    return x


@torch.no_grad()
def sample_dpm_adaptive(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    order=3,
    rtol=0.05,
    atol=0.0078,
    h_init=0.05,
    pcoeff=0.0,
    icoeff=1.0,
    dcoeff=0.0,
    accept_safety=0.81,
):
    """DPM-Solver-23 (or -12 with order 2), adaptive step size (section 4 and Algorithm 4 of
    the paper's appendix): each attempt takes a step of order-1 and one of `order` sharing
    evaluations, their difference scaled by max(atol, rtol * max(|x_low|, |x_prev|)) gives the
    error, and a PID controller on 1/error (k-diffusion's, defaults: integral only) grows or
    shrinks h, accepting when its factor reaches accept_safety. One report per attempt; the
    schedule's step count does not matter."""
    if len(sigmas) <= 1:
        return x
    if order not in {2, 3}:
        raise ValueError(f"order must be 2 or 3, not {order}")
    t_start, t_end = _dpm_solver_ends(sigmas)
    forward = bool(t_end > t_start)
    h = abs(h_init) * (1 if forward else -1)
    b_1, b_2, b_3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
    inverse_errors = []  # 1/error of this attempt and the last two accepted ones
    s, x_prev, attempts = t_start, x, 0
    while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
        t = torch.minimum(t_end, s + h) if forward else torch.maximum(t_end, s + h)
        eps = _dpm_solver_eps(model, x, s)
        denoised = to_denoised(x, eps, s.neg().exp())
        if order == 2:
            x_low = _dpm_solver_1(x, s, t, eps)
            x_high, _ = _dpm_solver_2(model, x, s, t, eps, 1 / 2)
        else:
            x_low, eps_1 = _dpm_solver_2(model, x, s, t, eps, 1 / 3)
            x_high = _dpm_solver_3(model, x, s, t, eps, eps_1)
        scale = torch.maximum(torch.tensor(atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / scale) / x.numel() ** 0.5
        inverse = 1 / (float(error) + 1e-8)
        inverse_errors = [inverse, *(inverse_errors[1:] if inverse_errors else [inverse, inverse])]
        factor = inverse_errors[0] ** b_1 * inverse_errors[1] ** b_2 * inverse_errors[2] ** b_3
        factor = 1 + math.atan(factor - 1)  # the controller's limiter
        if factor >= accept_safety:
            inverse_errors = [inverse_errors[0], inverse_errors[0], inverse_errors[1]]
            x_prev, x, s = x_low, x_high, t
        h *= factor
        _report(callback, x, attempts, s.neg().exp(), denoised)
        attempts += 1
    return x


# --- SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of
# Diffusion Models", NeurIPS 2023, arXiv 2309.05019), data prediction in the flow's half-log-SNR.


def _sa_solver_weights(sigma_t, nodes, lam_s, lam_t, tau: float) -> torch.Tensor:
    """The stochastic Adams weights b_j (eqs. 15 and 18): alpha_t times the integral over
    [lam_s, lam_t] of (1 + tau^2) e^((1 + tau^2)(lam - lam_t)) l_j(lam), l_j the Lagrange basis
    over `nodes`. Computed in float64 in u = lam - lam_t: the moments by parts,
    I_p = ((0^p - (-h)^p e^(-k h)) - p I_(p-1)) / k with k = 1 + tau^2, then the weights that
    integrate every polynomial of degree < len(nodes) exactly (a Vandermonde system)."""
    k = 1.0 + tau**2
    h = float(lam_t - lam_s)
    u = (nodes.double() - float(lam_t)).cpu()
    moments, previous = [], 0.0
    for p in range(len(u)):
        previous = ((1.0 if p == 0 else 0.0) - (-h) ** p * math.exp(-k * h) - p * previous) / k
        moments.append(k * previous)
    vandermonde = torch.vander(u, len(u), increasing=True).T  # row p: u_j^p
    weights = torch.linalg.solve(vandermonde, torch.tensor(moments, dtype=torch.float64))
    alpha_t = sigma_t * _flow_lambda(sigma_t).exp()
    return (alpha_t.double().cpu() * weights).to(sigma_t.dtype)


def _sa_solver_combine(weights: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    return sum(float(w) * d for w, d in zip(weights, history, strict=True))


@torch.no_grad()
def sample_sa_solver(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    tau_func=None,
    s_noise=1.0,
    predictor_order=3,
    corrector_order=4,
    use_pece=False,
):
    """SA-Solver's predictor-corrector (Algorithm 1): a stochastic Adams-Bashforth predictor over
    the last `predictor_order` denoised estimates, then, once the model has seen the predicted
    point, a stochastic Adams-Moulton corrector over the last `corrector_order` including it (PECE
    evaluates the corrected point again). The SDE's strength tau is ComfyUI's default: 1 for
    sigmas between percent_to_sigma(0.2) and percent_to_sigma(0.8), 0 (the ODE) outside; the
    orders drop near the end when the schedule reaches 0, and the last step returns the denoised
    estimate. The weights are exact in float64 here (ComfyUI solves them in the sigmas' float32)."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = default_noise_sampler(x, _seed(extra_args))
    sigmas = _offset_first_sigma(model, sigmas)
    lambdas = _flow_lambda(sigmas)
    if tau_func is None:
        start, end = model.model_sampling.percent_to_sigma(0.2), model.model_sampling.percent_to_sigma(0.8)

        def tau_func(sigma):
            return 1.0 if start >= float(sigma) >= end else 0.0

    last = len(sigmas) - 1
    lower_order_to_end = bool(sigmas[-1] == 0)
    x_pred, h, tau, noise, history = x, 0.0, 0.0, None, []
    for i in range(last):
        _, denoised = _evaluate(model, x_pred, sigmas[i])
        _report(callback, x_pred, i, sigmas[i], denoised)
        history = [*history, denoised][-max(predictor_order, corrector_order) :]
        p_order = min(predictor_order, len(history))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(history))
        if lower_order_to_end:
            p_order, c_order = min(p_order, last - 1 - i), min(c_order, last - i)
        # Corrector: from the previous sigma to this one, the newest estimate among the nodes.
        if c_order == 0:
            x = x_pred
        else:
            weights = _sa_solver_weights(
                sigmas[i], lambdas[i - c_order + 1 : i + 1], lambdas[i - 1], lambdas[i], tau
            )
            x = sigmas[i] / sigmas[i - 1] * math.exp(-(tau**2) * h) * x + _sa_solver_combine(
                weights, history[-c_order:]
            )
            if tau > 0 and s_noise > 0:
                x = x + noise  # the predictor's noise, for the same stretch of the path
            if use_pece:
                _, denoised = _evaluate(model, x, sigmas[i])
                history[-1] = denoised
        # Predictor: to the next sigma.
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        weights = _sa_solver_weights(
            sigmas[i + 1], lambdas[i - p_order + 1 : i + 1], lambdas[i], lambdas[i + 1], tau
        )
        h = float(lambdas[i + 1] - lambdas[i])
        x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-(tau**2) * h) * x + _sa_solver_combine(
            weights, history[-p_order:]
        )
        if tau > 0 and s_noise > 0:
            spread = sigmas[i + 1] * math.sqrt(-math.expm1(-2 * tau**2 * h)) * s_noise
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * spread
            x_pred = x_pred + noise
    return x


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
