"""Several prompts in one sampling run (ConditioningCombine, ConditioningSetTimestepRange), as
ComfyUI runs them (comfy/samplers.py at a125cd8, read for behaviour): each prompt's part of the
run becomes a range of noise levels through the model's sigma table (`percent_to_sigma`), and at
each model evaluation the predictions of the prompts whose range holds the current sigma are
averaged (ComfyUI averages the denoised estimates; the average of velocities is the same affine
combination). When no prompt's range holds it, ComfyUI's prediction is zero, a denoised estimate
of 0, which is the velocity x / sigma.

A plain CONDITIONING goes through untouched, so every run without these nodes is as before."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodes.comfy import guiders
from nodes.comfy.values import CombinedConditioning
from nodes.flux import math as fm
from nodes.flux.encode import Conditioning
from nodes.flux.sampler import check_fits


@dataclass(frozen=True)
class ScheduledConditioning:
    """Prompts ready for the transformer, each with the sigmas it is used between."""

    parts: tuple[tuple[Conditioning, float, float], ...]  # (prompt, highest sigma, lowest sigma)


def ready(value, loaded, batch: int, table) -> Conditioning | ScheduledConditioning:
    """A CONDITIONING checked against the loaded transformer, on its device and in its dtype,
    repeated to the batch; a combined one with its sigma ranges from the model's table."""
    if not isinstance(value, CombinedConditioning):
        check_fits(loaded.module, fm.LATENT_CHANNELS, value)
        return value.for_batch(batch, loaded.device, loaded.dtype)
    parts = []
    for part in value.parts:
        check_fits(loaded.module, fm.LATENT_CHANNELS, part.cond)
        cond = part.cond.for_batch(batch, loaded.device, loaded.dtype)
        parts.append(
            (cond, float(table.percent_to_sigma(part.start)), float(table.percent_to_sigma(part.end)))
        )
    return ScheduledConditioning(tuple(parts))


def scheduled(predict: guiders.Predict) -> guiders.Predict:
    """`predict` that also takes a ScheduledConditioning (see the module doc)."""

    def run(x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        if not isinstance(cond, ScheduledConditioning):
            return predict(x, sigma, cond)
        level = float(sigma.flatten()[0])
        active = [part for part, highest, lowest in cond.parts if lowest <= level <= highest]
        if not active:
            per_image = sigma.float().reshape(-1, *([1] * (x.ndim - 1)))
            return x.float() / per_image
        total = predict(x, sigma, active[0]).float()
        for part in active[1:]:
            total = total + predict(x, sigma, part).float()
        return total / len(active)

    return run
