"""ComfyUI's guiders for FLUX: one velocity function of (x, sigma) from a model and its conditioning.

`predict(x, sigma, cond) -> velocity` is whatever runs the transformer for one conditioning (see
model_sampling.flux_velocity); how a conditioning is represented is its business, not ours.

As ComfyUI's CFGGuider/sampling_function (comfy/samplers.py, a125cd8): a cfg within float
tolerance of 1 runs the positive pass only (BasicGuider always does); any other cfg also runs the
negative and combines `uncond + cfg * (cond - uncond)`. ComfyUI combines the denoised estimates
x - sigma*v; we combine the velocities, which is the same affine map (the x terms cancel), so the
two differ only by rounding, and with true CFG our result equals FluxSampler's bit for bit.
ComfyUI also batches cond and uncond into one transformer call where they fit; we call twice.
Every velocity is made float32 first, as ComfyUI does with model outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Predict = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, cfg: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 in velocity form)."""
    return uncond + cfg * (cond - uncond)


def basic_guider(predict: Predict, positive: Any) -> Velocity:
    """BasicGuider: the positive conditioning alone (FLUX.1-dev's distilled guidance lives in the
    conditioning, not here)."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return predict(x, sigma, positive).float()

    return velocity


def cfg_guider(predict: Predict, positive: Any, negative: Any, cfg: float) -> Velocity:
    """CFGGuider (and KSampler's cfg): true classifier-free guidance with the negative, two model
    passes per evaluation, unless cfg is 1."""
    if math.isclose(cfg, 1.0):
        return basic_guider(predict, positive)
    if negative is None:
        raise ValueError(f"cfg {cfg} needs a negative conditioning: connect one, or set cfg to 1")

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond = predict(x, sigma, positive).float()
        uncond = predict(x, sigma, negative).float()
        return cfg_combine(cond, uncond, cfg)

    return velocity


def dual_cfg_guider(
    predict: Predict,
    cond1: Any,
    cond2: Any,
    negative: Any,
    cfg_conds: float,
    cfg_negative: float,
    nested: bool,
) -> Velocity:
    """DualCFGGuider: guidance from two conditionings and a negative. "regular":
    uncond + cfg_negative * (cond2 - uncond) + cfg_conds * (cond1 - cond2), where a cfg of 1 drops
    the pass it would need (cfg_negative 1: no negative pass; both 1: cond1 alone); "nested":
    uncond + cfg_negative * ((cond2 + cfg_conds * (cond1 - cond2)) - uncond), all three passes.
    The coefficients sum to 1 in both, so combining velocities equals ComfyUI's combining of
    denoised estimates."""

    def regular(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        first = predict(x, sigma, cond1).float()
        if math.isclose(cfg_negative, 1.0) and math.isclose(cfg_conds, 1.0):
            return first
        second = predict(x, sigma, cond2).float()
        if math.isclose(cfg_negative, 1.0):
            return cfg_combine(first, second, cfg_conds)
        uncond = predict(x, sigma, negative).float()
        return cfg_combine(second, uncond, cfg_negative) + (first - second) * cfg_conds

    def nested_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        text = cfg_combine(predict(x, sigma, cond1).float(), predict(x, sigma, cond2).float(), cfg_conds)
        return cfg_combine(text, predict(x, sigma, negative).float(), cfg_negative)

    return nested_velocity if nested else regular
