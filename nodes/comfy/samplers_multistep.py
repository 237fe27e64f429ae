"""ComfyUI's newer multistep and stochastic samplers on FLUX flows: DPM-Solver++ 3M SDE, iPNDM,
RES multistep, Heun++, DDPM, gradient estimation, ER-SDE, SEEDS-2/3. Conventions and sources:
nodes/comfy/samplers.py."""

from __future__ import annotations

import torch

from nodes.comfy.noise import default_noise_sampler
from nodes.comfy.samplers_core import (
    _ancestral_split,
    _batch,
    _evaluate,
    _flow_lambda,
    _flow_sigma,
    _offset_first_sigma,
    _report,
    _sde_setup,
    _seed,
)

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
