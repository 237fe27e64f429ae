"""ComfyUI's nodes that mix prompts, as its nodes.py (a125cd8) mixes them.

Into one prompt (ConditioningAverage, ConditioningConcat):

- ConditioningAverage: to · s + from · (1 - s) on the T5 embeddings (`from` cut to, or padded with
  zeros to, `to`'s token count) and on the pooled CLIP-L vectors.
- ConditioningConcat: `from`'s tokens appended after `to`'s (FLUX attends to all of them);
  the pooled vector and the guidance are `to`'s.

Into several, each used in its part of the run (ConditioningCombine, ConditioningSetTimestepRange):
a CombinedConditioning (nodes/comfy/values.py), which KSampler and the custom-sampling nodes take;
at each step they average the predictions of the prompts whose part holds it. Areas and masks
are not supported."""

from __future__ import annotations

import dataclasses

import torch

from nodes.base import Float, Input, NodeContext, Output, Socket, node
from nodes.comfy.conditioning import check_conditioning
from nodes.comfy.values import CombinedConditioning, TimedConditioning, timed_parts
from nodes.flux import math as fm
from nodes.flux.encode import Conditioning
from nodes.flux.types import CONDITIONING


def _pair(to, source, where: str) -> tuple[Conditioning, Conditioning]:
    to = check_conditioning(to, where)
    source = check_conditioning(source, where)
    if to.prompt_embeds.shape[-1] != source.prompt_embeds.shape[-1]:
        raise ValueError(
            f"{where}: the two conditionings come from different text encoders "
            f"({to.prompt_embeds.shape[-1]} and {source.prompt_embeds.shape[-1]} values per token)"
        )
    return to, source


@node(
    "ConditioningAverage",
    category="conditioning",
    display_name="ConditioningAverage",
    description="Blend two prompts: conditioning_to_strength of the first, the rest of the second.",
    inputs=[
        Input("conditioning_to", Socket(CONDITIONING)),
        Input("conditioning_from", Socket(CONDITIONING)),
        Input("conditioning_to_strength", Float(default=1.0, min=0.0, max=1.0, step=0.01)),
    ],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def conditioning_average(
    ctx: NodeContext, conditioning_to, conditioning_from, conditioning_to_strength: float
) -> tuple[Conditioning]:
    to, source = _pair(conditioning_to, conditioning_from, "ConditioningAverage")
    strength = float(conditioning_to_strength)
    tokens = to.prompt_embeds.shape[1]
    other = source.prompt_embeds[:, :tokens].to(to.prompt_embeds.dtype)
    if other.shape[1] < tokens:
        padding = other.new_zeros((other.shape[0], tokens - other.shape[1], other.shape[2]))
        other = torch.cat([other, padding], dim=1)
    embeds = to.prompt_embeds * strength + other * (1.0 - strength)
    pooled_from = source.pooled_prompt_embeds.to(to.pooled_prompt_embeds.dtype)
    pooled = to.pooled_prompt_embeds * strength + pooled_from * (1.0 - strength)
    return (dataclasses.replace(to, prompt_embeds=embeds, pooled_prompt_embeds=pooled),)


@node(
    "ConditioningConcat",
    category="conditioning",
    display_name="ConditioningConcat",
    description="Append the second prompt's tokens to the first's (the pooled vector stays the first's).",
    inputs=[
        Input("conditioning_to", Socket(CONDITIONING)),
        Input("conditioning_from", Socket(CONDITIONING)),
    ],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def conditioning_concat(ctx: NodeContext, conditioning_to, conditioning_from) -> tuple[Conditioning]:
    to, source = _pair(conditioning_to, conditioning_from, "ConditioningConcat")
    embeds = torch.cat([to.prompt_embeds, source.prompt_embeds[:1].to(to.prompt_embeds.dtype)], dim=1)
    text_ids = fm.text_ids(embeds.shape[1], to.text_ids.device, to.text_ids.dtype)
    return (dataclasses.replace(to, prompt_embeds=embeds, text_ids=text_ids),)


@node(
    "ConditioningCombine",
    category="conditioning",
    display_name="Conditioning (Combine)",
    description="Use both prompts: at each step the sampler averages their predictions.",
    inputs=[
        Input("conditioning_1", Socket(CONDITIONING)),
        Input("conditioning_2", Socket(CONDITIONING)),
    ],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def conditioning_combine(ctx: NodeContext, conditioning_1, conditioning_2) -> tuple[CombinedConditioning]:
    parts = tuple(_timed(conditioning_1, "ConditioningCombine")) + tuple(
        _timed(conditioning_2, "ConditioningCombine")
    )
    return (CombinedConditioning(parts),)


@node(
    "ConditioningSetTimestepRange",
    category="advanced/conditioning",
    display_name="ConditioningSetTimestepRange",
    description="Use a prompt only from start to end of the run (0: the first step, 1: the last).",
    inputs=[
        Input("conditioning", Socket(CONDITIONING)),
        Input("start", Float(default=0.0, min=0.0, max=1.0, step=0.001)),
        Input("end", Float(default=1.0, min=0.0, max=1.0, step=0.001)),
    ],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def conditioning_set_timestep_range(ctx: NodeContext, conditioning, start: float, end: float):
    parts = _timed(conditioning, "ConditioningSetTimestepRange")
    return (CombinedConditioning(tuple(TimedConditioning(p.cond, float(start), float(end)) for p in parts)),)


def _timed(value, where: str) -> tuple[TimedConditioning, ...]:
    parts = timed_parts(value)
    for part in parts:
        check_conditioning(part.cond, where)
    return parts
