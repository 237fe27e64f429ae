"""The helpers every sampler in nodes/comfy/samplers*.py shares (the flow model they call, noise
seeds, the progress callback) and the samplers of k-diffusion's original set on FLUX flows:
Euler, Heun, DPM-2, the rectified-flow ancestral steps, DPM-Solver++ 2M and its SDE variants, LCM,
LMS, DEIS, UniPC. Conventions and sources: nodes/comfy/samplers.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nodes.comfy.guiders import Velocity
from nodes.comfy.model_sampling import (
    ModelSampling,
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
