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


# --- several prompts in one run: ConditioningCombine, ConditioningSetTimestepRange -----------


def test_combine_and_range_declared_as_comfyui():
    combine = nodes.load_all().get("ConditioningCombine").object_info()
    assert combine["input_order"]["required"] == ["conditioning_1", "conditioning_2"]
    assert (combine["display_name"], combine["category"]) == ("Conditioning (Combine)", "conditioning")
    ranged = nodes.load_all().get("ConditioningSetTimestepRange").object_info()
    assert ranged["input_order"]["required"] == ["conditioning", "start", "end"]
    assert ranged["category"] == "advanced/conditioning"
    end = ranged["input"]["required"]["end"][1]
    assert (end["default"], end["min"], end["max"], end["step"]) == (1.0, 0.0, 1.0, 0.001)


def test_scheduled_predictions_average_the_prompts_in_range():
    """On predictions that are constants per prompt: the average of the prompts whose range holds
    sigma, x / sigma (a denoised estimate of 0) where none does."""
    from nodes.comfy.prompt_schedule import ScheduledConditioning, scheduled

    a, b = cond(1, 1.0, 0.0), cond(1, 2.0, 0.0)
    values = {id(a): torch.tensor([[10.0]]), id(b): torch.tensor([[20.0]])}
    predict = scheduled(lambda x, sigma, c: values[id(c)])
    both = ScheduledConditioning(((a, 1.0, 0.0), (b, 0.6, 0.2)))
    x = torch.full((1, 1), 3.0)
    assert predict(x, torch.tensor([0.8]), both).item() == 10.0  # only a
    assert predict(x, torch.tensor([0.5]), both).item() == 15.0  # both: the average
    late = ScheduledConditioning(((b, 0.6, 0.2),))
    assert predict(x, torch.tensor([0.75]), late).item() == 4.0  # none: x / sigma
    plain = cond(1, 1.0, 0.0)
    values[id(plain)] = torch.tensor([[7.0]])
    assert predict(x, torch.tensor([0.5]), plain).item() == 7.0  # a plain prompt goes through


def schedule_prompt(first: dict, second: dict) -> dict:
    """KSampler (euler, 4 steps) on ConditioningCombine of two ranged prompts."""
    prompt = models("tiny-dev")
    prompt.update(a=text("a red fox"), b=text("a blue boat"), neg=text(""))
    prompt["ra"] = {
        "class_type": "ConditioningSetTimestepRange",
        "inputs": {"conditioning": ["a", 0], **first},
    }
    prompt["rb"] = {
        "class_type": "ConditioningSetTimestepRange",
        "inputs": {"conditioning": ["b", 0], **second},
    }
    prompt["both"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["ra", 0], "conditioning_2": ["rb", 0]},
    }
    prompt["empty"] = {
        "class_type": "EmptySD3LatentImage",
        "inputs": {"width": 32, "height": 32, "batch_size": 1},
    }
    prompt["s"] = ksampler(["empty", 0], positive=["both", 0], negative=["neg", 0], steps=4)
    prompt["k"] = keep(["s", 0])
    return prompt


def test_a_prompt_ranged_over_the_whole_run_is_that_prompt(rt):
    """a over the whole run, b over none of it: exactly a's run; b's range then changes it."""
    only_a = schedule_prompt({"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 1.0})
    plain = {**models("tiny-dev"), "a": text("a red fox"), "neg": text("")}
    plain["empty"] = only_a["empty"]
    plain["s"] = ksampler(["empty", 0], positive=["a", 0], negative=["neg", 0], steps=4)
    plain["k"] = keep(["s", 0])
    expected = value_of(rt, plain, "s")["samples"]
    assert torch.equal(value_of(rt, only_a, "s")["samples"], expected)
    halves = schedule_prompt({"start": 0.0, "end": 0.5}, {"start": 0.5, "end": 1.0})
    assert not torch.allclose(value_of(rt, halves, "s")["samples"], expected, atol=1e-4)


def test_flux_guidance_reaches_every_prompt_and_flux_sampler_refuses_several(rt):
    prompt = schedule_prompt({"start": 0.0, "end": 1.0}, {"start": 0.0, "end": 1.0})
    prompt["g"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["both", 0], "guidance": 5.0}}
    prompt["kg"] = keep(["g", 0])
    guided = value_of(rt, prompt, "g")
    assert [p.cond.guidance for p in guided.parts] == [5.0, 5.0]
    prompt["fs"] = {
        "class_type": "FluxSampler",
        "inputs": {
            "model": ["flux", 0],
            "positive": ["both", 0],
            "latent": ["empty", 0],
            "seed": 1,
            "steps": 2,
            "guidance": 3.5,
            "true_cfg_scale": 1.0,
            "denoise": 1.0,
        },
    }
    prompt["kfs"] = keep(["fs", 0])
    result = rt.executor.execute(prompt, "several-prompts")
    assert result.status == "error" and result.error["node_id"] == "fs"
    assert "FluxSampler: positive must be one prompt's conditioning" in result.error["exception_message"]
    with pytest.raises(ValueError, match="ConditioningAverage takes one prompt"):
        conditioning_average(CTX, guided, cond(2, 1.0, 0.0), 0.5)
