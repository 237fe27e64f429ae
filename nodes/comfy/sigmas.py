"""ComfyUI's SIGMAS nodes beyond BasicScheduler: the standalone schedulers (an explicit sigma
range, or the model's table) and the nodes that cut, flip, reset or thicken a schedule, so that a
workflow can split one run across two samplers (SplitSigmas), start from a given noise level
(SetFirstSigma) or add steps where it wants them (ExtendIntermediateSigmas).

Inputs, defaults and behaviour as comfy_extras/nodes_custom_sampler.py (a125cd8); the schedules'
formulas are in nodes/comfy/schedulers.py. A SIGMAS value is a 1-D float tensor; these nodes
never change the one they are given (the cache may hold it)."""

from __future__ import annotations

import math

import torch

from nodes.base import FLOAT, Boolean, Combo, Float, Input, Int, NodeContext, Output, Socket, node
from nodes.comfy import schedulers as sc
from nodes.comfy.sampling import check_model, model_sampling_for
from nodes.comfy.types import MODEL, SIGMAS

SCHEDULERS = "sampling/custom_sampling/schedulers"
CATEGORY = "sampling/custom_sampling/sigmas"

STEPS = Int(default=20, min=1, max=10000)
# ComfyUI's defaults are SD1.5's range; a FLUX workflow sets its own (FLUX's sigmas are in (0, 1]).
SIGMA_MAX = Float(default=14.614642, min=0.0, max=5000.0, step=0.01)
SIGMA_MIN = Float(default=0.0291675, min=0.0, max=5000.0, step=0.01)


def check_sigmas(sigmas, where: str) -> torch.Tensor:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise ValueError(f"{where}: sigmas must be a 1-D tensor of noise levels (a scheduler node)")
    return sigmas


def _range(where: str, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"{where}: needs 0 < sigma_min <= sigma_max (got {sigma_min} and {sigma_max})")
    return float(sigma_min), float(sigma_max)


@node(
    "KarrasScheduler",
    category=SCHEDULERS,
    display_name="KarrasScheduler",
    description="Karras et al.'s schedule between sigma_max and sigma_min (rho bends it towards low noise).",
    inputs=[
        Input("steps", STEPS),
        Input("sigma_max", SIGMA_MAX),
        Input("sigma_min", SIGMA_MIN),
        Input("rho", Float(default=7.0, min=0.0, max=100.0, step=0.01)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def karras_scheduler(ctx: NodeContext, steps: int, sigma_max: float, sigma_min: float, rho: float):
    lo, hi = _range("KarrasScheduler", sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError("KarrasScheduler: rho must be above 0")
    return (sc.karras_range(steps, lo, hi, rho),)


@node(
    "ExponentialScheduler",
    category=SCHEDULERS,
    display_name="ExponentialScheduler",
    description="Evenly spaced in log sigma, from sigma_max down to sigma_min.",
    inputs=[Input("steps", STEPS), Input("sigma_max", SIGMA_MAX), Input("sigma_min", SIGMA_MIN)],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def exponential_scheduler(ctx: NodeContext, steps: int, sigma_max: float, sigma_min: float):
    lo, hi = _range("ExponentialScheduler", sigma_min, sigma_max)
    return (sc.exponential_range(steps, lo, hi),)


@node(
    "PolyexponentialScheduler",
    category=SCHEDULERS,
    display_name="PolyexponentialScheduler",
    description="A polynomial ramp in log sigma (rho 1: exponential; above 1: more steps at low noise).",
    inputs=[
        Input("steps", STEPS),
        Input("sigma_max", SIGMA_MAX),
        Input("sigma_min", SIGMA_MIN),
        Input("rho", Float(default=1.0, min=0.0, max=100.0, step=0.01)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def polyexponential_scheduler(ctx: NodeContext, steps: int, sigma_max: float, sigma_min: float, rho: float):
    lo, hi = _range("PolyexponentialScheduler", sigma_min, sigma_max)
    return (sc.polyexponential_range(steps, lo, hi, rho),)


@node(
    "LaplaceScheduler",
    category=SCHEDULERS,
    display_name="LaplaceScheduler",
    description="log sigma at the quantiles of a Laplace(mu, beta), clamped to the range (no final 0).",
    inputs=[
        Input("steps", STEPS),
        Input("sigma_max", SIGMA_MAX),
        Input("sigma_min", SIGMA_MIN),
        Input("mu", Float(default=0.0, min=-10.0, max=10.0, step=0.1)),
        Input("beta", Float(default=0.5, min=0.0, max=10.0, step=0.1)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def laplace_scheduler(
    ctx: NodeContext, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float
):
    lo, hi = _range("LaplaceScheduler", sigma_min, sigma_max)
    return (sc.laplace_range(steps, lo, hi, mu, beta),)


@node(
    "VPScheduler",
    category=SCHEDULERS,
    display_name="VPScheduler",
    description="The noise levels of a continuous variance-preserving diffusion (Song et al. 2021).",
    inputs=[
        Input("steps", STEPS),
        Input("beta_d", Float(default=19.9, min=0.0, max=5000.0, step=0.01)),
        Input("beta_min", Float(default=0.1, min=0.0, max=5000.0, step=0.01)),
        Input("eps_s", Float(default=0.001, min=0.0, max=1.0, step=0.0001)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def vp_scheduler(ctx: NodeContext, steps: int, beta_d: float, beta_min: float, eps_s: float):
    return (sc.vp_range(steps, beta_d, beta_min, eps_s),)


@node(
    "BetaSamplingScheduler",
    category=SCHEDULERS,
    display_name="BetaSamplingScheduler",
    description="The model's sigmas at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024).",
    inputs=[
        Input("model", Socket(MODEL)),
        Input("steps", STEPS),
        Input("alpha", Float(default=0.6, min=0.0, max=50.0, step=0.01)),
        Input("beta", Float(default=0.6, min=0.0, max=50.0, step=0.01)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def beta_sampling_scheduler(ctx: NodeContext, model, steps: int, alpha: float, beta: float):
    if alpha <= 0 or beta <= 0:
        raise ValueError("BetaSamplingScheduler: alpha and beta must be above 0")
    table = model_sampling_for(ctx, check_model(model, "BetaSamplingScheduler"))
    return (sc.beta(table, steps, alpha, beta),)


@node(
    "SplitSigmas",
    category=CATEGORY,
    display_name="SplitSigmas",
    description="Cut a schedule at a step: high_sigmas up to it, low_sigmas from it (both hold its sigma).",
    inputs=[Input("sigmas", Socket(SIGMAS)), Input("step", Int(default=0, min=0, max=10000))],
    outputs=[Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas")],
)
def split_sigmas(ctx: NodeContext, sigmas, step: int):
    sigmas = check_sigmas(sigmas, "SplitSigmas")
    return sigmas[: step + 1].clone(), sigmas[step:].clone()


@node(
    "SplitSigmasDenoise",
    category=CATEGORY,
    display_name="SplitSigmasDenoise",
    description="Cut a schedule so that low_sigmas holds the last `denoise` part of its steps.",
    inputs=[
        Input("sigmas", Socket(SIGMAS)),
        Input("denoise", Float(default=1.0, min=0.0, max=1.0, step=0.01)),
    ],
    outputs=[Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas")],
)
def split_sigmas_denoise(ctx: NodeContext, sigmas, denoise: float):
    sigmas = check_sigmas(sigmas, "SplitSigmasDenoise")
    low_steps = round(max(len(sigmas) - 1, 0) * denoise)
    # As ComfyUI: with denoise 0, high_sigmas is empty (a slice to -0) and low_sigmas the last sigma.
    return sigmas[: len(sigmas) - low_steps if low_steps else 0].clone(), sigmas[-(low_steps + 1) :].clone()


@node(
    "FlipSigmas",
    category=CATEGORY,
    display_name="FlipSigmas",
    description="Reverse a schedule (rising noise levels, to invert a run); a first 0 becomes 0.0001.",
    inputs=[Input("sigmas", Socket(SIGMAS))],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def flip_sigmas(ctx: NodeContext, sigmas):
    sigmas = check_sigmas(sigmas, "FlipSigmas").flip(0)  # flip copies
    if len(sigmas) and sigmas[0] == 0:
        sigmas[0] = 0.0001
    return (sigmas,)


@node(
    "SetFirstSigma",
    category=CATEGORY,
    display_name="SetFirstSigma",
    description="Replace a schedule's first noise level.",
    inputs=[
        Input("sigmas", Socket(SIGMAS)),
        Input("sigma", Float(default=136.0, min=0.0, max=20000.0, step=0.001)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def set_first_sigma(ctx: NodeContext, sigmas, sigma: float):
    sigmas = check_sigmas(sigmas, "SetFirstSigma").clone()
    if len(sigmas) == 0:
        raise ValueError("SetFirstSigma: the schedule is empty")
    sigmas[0] = sigma
    return (sigmas,)


SPACINGS = {
    "linear": lambda x: x,
    "cosine": lambda x: torch.sin(x * math.pi / 2),
    "sine": lambda x: 1 - torch.cos(x * math.pi / 2),
}


@node(
    "ExtendIntermediateSigmas",
    category=CATEGORY,
    display_name="ExtendIntermediateSigmas",
    description=(
        "Put steps - 1 extra noise levels inside each step whose sigma lies between end_at_sigma and "
        "start_at_sigma (-1: no upper bound), spaced linearly, or bunched towards one end."
    ),
    inputs=[
        Input("sigmas", Socket(SIGMAS)),
        Input("steps", Int(default=2, min=1, max=100)),
        Input("start_at_sigma", Float(default=-1.0, min=-1.0, max=20000.0, step=0.01)),
        Input("end_at_sigma", Float(default=12.0, min=0.0, max=20000.0, step=0.01)),
        Input("spacing", Combo(tuple(SPACINGS))),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def extend_intermediate_sigmas(
    ctx: NodeContext, sigmas, steps: int, start_at_sigma: float, end_at_sigma: float, spacing: str
):
    sigmas = check_sigmas(sigmas, "ExtendIntermediateSigmas").float()
    upper = math.inf if start_at_sigma < 0 else start_at_sigma
    fractions = SPACINGS[spacing](torch.linspace(0, 1, steps + 1)[1:-1])
    out: list[float] = []
    for current, following in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        out.append(current)
        if end_at_sigma <= current <= upper:
            out += (current + fractions * (following - current)).tolist()
    out += sigmas[-1:].tolist()
    return (torch.tensor(out, dtype=torch.float32),)


@node(
    "SamplingPercentToSigma",
    category=CATEGORY,
    display_name="SamplingPercentToSigma",
    description=(
        "The model's noise level a fraction of the way through sampling (0: the start). At 0 and 1 it "
        "gives the values ComfyUI's percent checks use (1 and 0) unless return_actual_sigma."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("sampling_percent", Float(default=0.0, min=0.0, max=1.0, step=0.0001)),
        Input("return_actual_sigma", Boolean(default=False)),
    ],
    outputs=[Output(FLOAT, "sigma_value")],
)
def sampling_percent_to_sigma(ctx: NodeContext, model, sampling_percent: float, return_actual_sigma: bool):
    table = model_sampling_for(ctx, check_model(model, "SamplingPercentToSigma"))
    if return_actual_sigma and sampling_percent == 0.0:
        return (float(table.sigma_max),)
    if return_actual_sigma and sampling_percent == 1.0:
        return (float(table.sigma_min),)
    return (float(table.percent_to_sigma(sampling_percent)),)
