"""CLIPTextEncode, CLIPTextEncodeFlux, FluxGuidance and ConditioningZeroOut on tiny real encoders."""

from __future__ import annotations

import pytest
import torch

from nodes.base import NodeContext, NodeEnv
from nodes.comfy.conditioning import T5_MIN_TOKENS, clip_text_encode
from nodes.comfy.values import TextEncoders
from nodes.flux.encode import Conditioning
from nodes.flux.handles import ModelHandle
from tests.comfy_nodes.graphs import encode_prompt, keep, models, text, txt2img, value_of

LONG = " ".join(f"meadow{i} river{i}" for i in range(150))  # far more than 256 T5 tokens


def encoded(rt, node: dict) -> Conditioning:
    prompt = models()
    prompt["enc"] = node
    prompt["out"] = keep(["enc", 0])
    return value_of(rt, prompt, "enc")


def t5_length(rt, words: str) -> int:
    with rt.env.models.use(value_of(rt, {**models(), "out": keep(["t5", 0])}, "t5")) as loaded:
        return len(loaded.tokenizer(words).input_ids)


def test_t5_is_padded_to_256_tokens_and_never_truncated(rt):
    short = encoded(rt, text("a red fox"))
    assert short.prompt_embeds.shape == (1, T5_MIN_TOKENS, 64)
    assert short.text_ids.shape == (T5_MIN_TOKENS, 3) and not short.text_ids.any()
    assert short.pooled_prompt_embeds.shape == (1, 64)
    assert short.guidance is None
    n = t5_length(rt, LONG)
    assert n > T5_MIN_TOKENS
    assert encoded(rt, text(LONG)).prompt_embeds.shape == (1, n, 64)
    # embeddings are kept on the CPU for the sampler
    assert short.prompt_embeds.device.type == "cpu"


def test_same_maths_as_encode_prompt_for_the_same_tokens(rt):
    """CLIP-L is FluxPipeline's; T5 padded to 256 is EncodePrompt with max_sequence_length 256."""
    ours = encoded(rt, text("a lighthouse at dusk"))
    theirs = encoded(rt, encode_prompt("a lighthouse at dusk", tokens=256))
    assert torch.equal(ours.pooled_prompt_embeds, theirs.pooled_prompt_embeds)
    assert torch.equal(ours.prompt_embeds, theirs.prompt_embeds)


def test_clip_text_encode_flux_encodes_two_texts_and_sets_guidance(rt):
    node = {
        "class_type": "CLIPTextEncodeFlux",
        "inputs": {"clip": ["clip", 0], "clip_l": "a fox", "t5xxl": "a lighthouse", "guidance": 4.0},
    }
    both = encoded(rt, node)
    assert both.guidance == 4.0
    assert torch.equal(both.pooled_prompt_embeds, encoded(rt, text("a fox")).pooled_prompt_embeds)
    assert torch.equal(both.prompt_embeds, encoded(rt, text("a lighthouse")).prompt_embeds)


def test_flux_guidance_and_zero_out(rt):
    prompt = models()
    prompt["enc"] = text("a fox")
    prompt["guided"] = {
        "class_type": "FluxGuidance",
        "inputs": {"conditioning": ["enc", 0], "guidance": 30.0},
    }
    prompt["zero"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["guided", 0]}}
    prompt["out"] = keep(["zero", 0])
    original, guided, zero = (value_of(rt, prompt, n) for n in ("enc", "guided", "zero"))
    assert guided.guidance == 30.0 and original.guidance is None  # the input is left as it was
    assert torch.equal(guided.prompt_embeds, original.prompt_embeds)
    assert zero.guidance == 30.0 and torch.equal(zero.text_ids, original.text_ids)
    assert zero.prompt_embeds.shape == original.prompt_embeds.shape and not zero.prompt_embeds.any()
    assert zero.pooled_prompt_embeds.shape == (1, 64) and not zero.pooled_prompt_embeds.any()


@pytest.mark.parametrize(("source", "matters"), [("tiny-dev", True), ("tiny-schnell", False)])
def test_guidance_reaches_the_sampler_on_dev_only(rt, source, matters):
    def result(guidance: float, node: str = "CLIPTextEncodeFlux"):
        prompt = txt2img(source, seed=6)
        inputs = {"clip": ["clip", 0], "clip_l": "a red fox", "t5xxl": "a red fox", "guidance": guidance}
        if node == "FluxGuidance":
            prompt["plain"] = text("a red fox")
            inputs = {"conditioning": ["plain", 0], "guidance": guidance}
        prompt["pos"] = {"class_type": node, "inputs": inputs}
        return value_of(rt, prompt, "sample")["samples"]

    low, high = result(1.0), result(10.0)
    assert torch.equal(low, high) is not matters
    # FluxGuidance on CLIPTextEncode is the same conditioning as CLIPTextEncodeFlux
    assert torch.equal(result(10.0, "FluxGuidance"), high)
    # no guidance set: the sampler's default 3.5
    assert torch.equal(value_of(rt, txt2img(source, seed=6), "sample")["samples"], result(3.5))


def test_a_clip_without_t5_is_refused_by_name():
    handle = ModelHandle("CLIP", "x", "/nowhere", "none", "fp32")
    with pytest.raises(ValueError, match="CLIPTextEncode: FLUX needs CLIP-L and T5-XXL.*no T5-XXL"):
        clip_text_encode(NodeContext(env=NodeEnv()), "a fox", TextEncoders(clip_l=handle))
    with pytest.raises(ValueError, match="CLIPTextEncode: clip must come from a CLIP loader"):
        clip_text_encode(NodeContext(env=NodeEnv()), "a fox", handle)
