"""ConditioningAverage and ConditioningConcat: declared as ComfyUI declares them (nodes.py at
a125cd8) and mixing as it mixes, on conditionings made by CLIPTextEncode on the tiny model."""

from __future__ import annotations

import pytest
import torch

import nodes
from nodes.base import NodeContext, NodeEnv
from nodes.comfy.conditioning_mix import conditioning_average, conditioning_concat
from nodes.flux import math as fm
from nodes.flux.encode import Conditioning
from tests.comfy_nodes.graphs import keep, ksampler, models, text, value_of

CTX = NodeContext(env=NodeEnv())


def cond(tokens: int, value: float, pooled: float, guidance=None) -> Conditioning:
    return Conditioning(
        torch.full((1, tokens, 8), value),
        torch.full((1, 4), pooled),
        fm.text_ids(tokens, "cpu", torch.float32),
        guidance,
    )


def test_declared_as_comfyui():
    average = nodes.load_all().get("ConditioningAverage").object_info()
    assert average["input_order"]["required"] == [
        "conditioning_to",
        "conditioning_from",
        "conditioning_to_strength",
    ]
    strength = average["input"]["required"]["conditioning_to_strength"][1]
    assert (strength["default"], strength["min"], strength["max"], strength["step"]) == (1.0, 0.0, 1.0, 0.01)
    concat = nodes.load_all().get("ConditioningConcat").object_info()
    assert concat["input_order"]["required"] == ["conditioning_to", "conditioning_from"]
    assert average["category"] == concat["category"] == "conditioning"


def test_average_blends_and_pads_or_cuts_the_tokens():
    to, source = cond(4, 1.0, 2.0, guidance=3.0), cond(2, 5.0, 6.0)
    (out,) = conditioning_average(CTX, to, source, 0.25)
    assert torch.allclose(out.prompt_embeds[0, :2], torch.full((2, 8), 0.25 * 1 + 0.75 * 5))
    assert torch.allclose(out.prompt_embeds[0, 2:], torch.full((2, 8), 0.25))  # padded with zeros
    assert torch.allclose(out.pooled_prompt_embeds, torch.full((1, 4), 0.25 * 2 + 0.75 * 6))
    assert out.guidance == 3.0 and out.prompt_embeds.shape == (1, 4, 8)
    (cut,) = conditioning_average(CTX, cond(2, 1.0, 0.0), cond(4, 5.0, 0.0), 1.0)
    assert torch.equal(cut.prompt_embeds, torch.ones(1, 2, 8))  # strength 1: the first, as it is


def test_concat_appends_the_tokens_and_keeps_the_first_pooled():
    (out,) = conditioning_concat(CTX, cond(3, 1.0, 2.0, guidance=4.0), cond(2, 5.0, 6.0))
    assert out.prompt_embeds.shape == (1, 5, 8) and out.text_ids.shape == (5, 3)
    assert out.prompt_embeds[0, :3].eq(1).all() and out.prompt_embeds[0, 3:].eq(5).all()
    assert out.pooled_prompt_embeds.eq(2).all() and out.guidance == 4.0


def test_mixed_prompts_sample_on_the_tiny_model(rt):
    prompt = models("tiny-dev")
    prompt.update(a=text("a red fox"), b=text("a blue boat"), neg=text(""))
    prompt["avg"] = {
        "class_type": "ConditioningAverage",
        "inputs": {
            "conditioning_to": ["a", 0],
            "conditioning_from": ["b", 0],
            "conditioning_to_strength": 0.5,
        },
    }
    prompt["cat"] = {
        "class_type": "ConditioningConcat",
        "inputs": {"conditioning_to": ["a", 0], "conditioning_from": ["b", 0]},
    }
    prompt["empty"] = {
        "class_type": "EmptySD3LatentImage",
        "inputs": {"width": 32, "height": 32, "batch_size": 1},
    }
    for name in ("avg", "cat"):
        prompt[f"s_{name}"] = ksampler(["empty", 0], positive=[name, 0], negative=["neg", 0])
        prompt[f"k_{name}"] = keep([f"s_{name}", 0])
    averaged, concatenated = (
        value_of(rt, prompt, "s_avg")["samples"],
        value_of(rt, prompt, "s_cat")["samples"],
    )
    assert torch.isfinite(averaged).all() and torch.isfinite(concatenated).all()
    assert not torch.allclose(averaged, concatenated)
    a, b = value_of(rt, prompt, "a"), value_of(rt, prompt, "b")
    mixed = value_of(rt, prompt, "avg")
    assert torch.allclose(mixed.prompt_embeds, (a.prompt_embeds + b.prompt_embeds) / 2, atol=1e-6)


def test_conditionings_of_different_encoders_are_refused():
    with pytest.raises(ValueError, match="ConditioningConcat: the two conditionings come from different"):
        conditioning_concat(
            CTX, cond(2, 1.0, 0.0), Conditioning(torch.ones(1, 2, 16), torch.ones(1, 4), torch.zeros(2, 3))
        )
