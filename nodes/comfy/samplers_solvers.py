"""DPM-Solver fast and adaptive and SA-Solver on FLUX flows, each choosing its own steps or
weights from the schedule. Conventions and sources: nodes/comfy/samplers.py."""

from __future__ import annotations

import math

import torch

from nodes.comfy.model_sampling import (
    to_denoised,
)
from nodes.comfy.noise import default_noise_sampler
from nodes.comfy.samplers_core import (
    _batch,
    _evaluate,
    _flow_lambda,
    _offset_first_sigma,
    _report,
    _seed,
)

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
