"""KSampler and KSamplerAdvanced on tiny real FLUX models, node to node through the executor."""

from __future__ import annotations

import pytest
import torch

from server.validation import ValidationError
from tests.comfy_nodes.graphs import (
    decode,
    empty,
    encode_prompt,
    keep,
    ksampler,
    models,
    random_latent_node,
    txt2img,
    value_of,
)

# The samplers and schedulers issue 10 asks for.
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "lcm", "deis", "uni_pc")
SCHEDULERS = ("simple", "normal", "karras", "exponential", "sgm_uniform", "beta", "ddim_uniform")


def samples(rt, prompt, node="sample") -> torch.Tensor:
    return value_of(rt, prompt, node)["samples"]


def test_every_sampler_and_scheduler_runs_and_the_seed_matters(rt):
    prompt = txt2img(short=True)  # 8 T5 tokens: 63 combinations x 2 seeds stay quick
    results = {}
    for sampler in SAMPLERS:
        for scheduler in SCHEDULERS:
            prompt["sample"]["inputs"].update(sampler_name=sampler, scheduler=scheduler, seed=1)
            out = samples(rt, prompt)
            assert out.shape == (1, 16, 4, 4) and out.dtype == torch.float32, (sampler, scheduler)
            assert torch.isfinite(out).all(), (sampler, scheduler)
            prompt["sample"]["inputs"]["seed"] = 2
            assert not torch.equal(samples(rt, prompt), out), (sampler, scheduler)
            results[sampler, scheduler] = out
    # The sampler and the scheduler both matter.
    assert not torch.equal(results["euler", "simple"], results["heun", "simple"])
    assert not torch.equal(results["euler", "simple"], results["euler", "karras"])


def test_cfg_above_one_uses_the_negative_and_cfg_one_ignores_it(rt):
    def result(cfg, negative):
        return samples(rt, txt2img(short=True, negative=negative, cfg=cfg, seed=3))

    assert torch.equal(result(1.0, "blurry"), result(1.0, "a dark cave"))
    assert not torch.equal(result(3.0, "blurry"), result(3.0, "a dark cave"))
    assert not torch.equal(result(3.0, "blurry"), result(1.0, "blurry"))


def test_denoise_below_one_starts_from_the_input_latent(rt):
    def result(latent_seed, denoise):
        prompt = txt2img(short=True, denoise=denoise, steps=4, seed=5)
        prompt["empty"] = random_latent_node(latent_seed)
        return samples(rt, prompt)

    # FLUX's sigmas start at 1: a full denoise keeps nothing of the input, a partial one does.
    assert torch.equal(result(1, 1.0), result(2, 1.0))
    assert not torch.equal(result(1, 0.5), result(2, 0.5))
    # denoise 0 runs no step: the latent comes back as it was
    prompt = txt2img(short=True, denoise=0.0)
    prompt["empty"] = random_latent_node(9)
    assert torch.equal(samples(rt, prompt), value_of(rt, prompt, "empty")["samples"])


def test_empty_latent_image_has_four_channels_and_samples_as_sixteen(rt):
    four = txt2img(short=True)
    four["empty"] = empty(kind="EmptyLatentImage")
    assert value_of(rt, four, "empty")["samples"].shape == (1, 4, 4, 4)
    out = samples(rt, four)
    assert out.shape == (1, 16, 4, 4)
    # zeros of 16 channels and the noise of that shape: the same run as from EmptySD3LatentImage
    assert torch.equal(out, samples(rt, txt2img(short=True)))


def test_a_non_empty_latent_of_another_model_is_refused_by_name(rt):
    prompt = txt2img(short=True)
    prompt["empty"] = random_latent_node(1, channels=4)
    result = rt.executor.execute(prompt, "four-channels")
    assert result.status == "error"
    assert result.error["node_type"] == "KSampler"
    assert "16-channel" in result.error["exception_message"]


def test_an_unsupported_sampler_fails_validation_listing_the_choices(rt):
    prompt = txt2img(short=True, sampler_name="euler_cfg_pp")
    with pytest.raises(ValidationError) as err:
        rt.executor.execute(prompt, "bad-sampler")
    (error,) = err.value.node_errors["sample"]["errors"]
    assert error["type"] == "value_not_in_list" and "euler" in error["details"]


def test_progress_after_every_step(rt):
    events = []
    value_of(rt, txt2img(short=True, steps=3, seed=11), "sample", listener=lambda e, d: events.append((e, d)))
    steps = [(d["value"], d["max"]) for e, d in events if e == "progress" and d["node"] == "sample"]
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_an_interrupt_stops_the_sampler_at_that_step(rt):
    events = []

    def listener(event, data):
        events.append((event, data))
        if event == "progress" and data["node"] == "sample" and data["value"] == 2:
            rt.executor.interrupt()

    result = rt.executor.execute(txt2img(short=True, steps=6, seed=13), "interrupted", listener)
    assert result.status == "interrupted"
    assert [d["value"] for e, d in events if e == "progress" and d["node"] == "sample"] == [1, 2]


def test_odd_latent_sizes_are_padded_for_the_transformer(rt):
    prompt = txt2img(short=True)
    prompt["empty"] = empty(width=40, height=24)  # 5 x 3 latent cells
    assert samples(rt, prompt).shape == (1, 16, 3, 5)


# --- KSamplerAdvanced ------------------------------------------------------------------------


def advanced(latent, add_noise="enable", start=0, end=10000, leftover="disable", steps=4):
    inputs = {
        "model": ["model", 0],
        "add_noise": add_noise,
        "noise_seed": 21,
        "steps": steps,
        "cfg": 1.0,
        "sampler_name": "euler",
        "scheduler": "simple",
        "positive": ["pos", 0],
        "negative": ["pos", 0],
        "latent_image": latent,
        "start_at_step": start,
        "end_at_step": end,
        "return_with_leftover_noise": leftover,
    }
    return {"class_type": "KSamplerAdvanced", "inputs": inputs}


def test_ksampler_advanced_split_in_two_equals_one_run(rt):
    prompt = models()
    prompt.update(pos=encode_prompt("a lighthouse"), empty=empty())
    prompt["whole"] = advanced(["empty", 0])
    prompt["first"] = advanced(["empty", 0], end=2, leftover="enable")
    prompt["second"] = advanced(["first", 0], add_noise="disable", start=2)
    prompt["first_full"] = advanced(["empty", 0], end=2)
    prompt["none_left"] = advanced(["first", 0], start=4)
    for node in ("whole", "second", "first_full", "none_left"):
        prompt[f"keep_{node}"] = keep([node, 0])
    whole = value_of(rt, prompt, "whole")["samples"]
    second = value_of(rt, prompt, "second")["samples"]
    # equal up to the rounding of the raw-latent round trip in between (x/(1-sigma), scale, shift)
    torch.testing.assert_close(second, whole, rtol=1e-5, atol=1e-5)
    # KSampler with the same settings is the whole run, bit for bit
    prompt["ks"] = ksampler(["empty", 0], seed=21, steps=4, negative=["pos", 0])
    prompt["keep_ks"] = keep(["ks", 0])
    assert torch.equal(value_of(rt, prompt, "ks")["samples"], whole)
    # without leftover noise the first half ends at sigma 0: a different, finished latent
    first = value_of(rt, prompt, "first")["samples"]
    assert not torch.allclose(first, value_of(rt, prompt, "first_full")["samples"], atol=1e-3)
    # starting at or after the last step: nothing to do, the latent comes back
    assert torch.equal(value_of(rt, prompt, "none_left")["samples"], first)


def test_ksampler_and_fluxsampler_latents_and_conditioning_interchange(rt):
    """One type name, one value: EncodePrompt feeds KSampler, CLIPTextEncode feeds FluxSampler,
    and a LATENT goes from either sampler into the other and into VAEDecode."""
    prompt = txt2img(short=True)  # EncodePrompt → KSampler
    prompt["cpos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["clip", 0]}}
    flux = {"model": ["flux", 0], "seed": 4, "steps": 2, "guidance": 3.5, "true_cfg_scale": 1.0}
    prompt["fs_after_ks"] = {
        "class_type": "FluxSampler",
        "inputs": {**flux, "positive": ["cpos", 0], "latent": ["sample", 0], "denoise": 0.5},
    }
    prompt["fs"] = {
        "class_type": "FluxSampler",
        "inputs": {**flux, "positive": ["pos", 0], "latent": ["empty", 0], "denoise": 1.0},
    }
    prompt["ks_after_fs"] = ksampler(["fs", 0], denoise=0.5)
    prompt["decode"] = decode(["ks_after_fs", 0])
    prompt["decode2"] = decode(["fs_after_ks", 0])
    prompt["keep_image"] = keep(["decode", 0])
    prompt["keep_image2"] = keep(["decode2", 0])
    assert value_of(rt, prompt, "decode").shape == (1, 32, 32, 3)
    assert value_of(rt, prompt, "decode2").shape == (1, 32, 32, 3)
    fs = value_of(rt, prompt, "fs")["samples"]
    assert not torch.equal(value_of(rt, prompt, "ks_after_fs")["samples"], fs)


def test_a_batch_gets_one_noise_per_image(rt):
    prompt = txt2img(short=True)
    prompt["empty"]["inputs"]["batch_size"] = 2
    pair = samples(rt, prompt)
    assert pair.shape == (2, 16, 4, 4) and not torch.equal(pair[0], pair[1])
    # the first image of the batch is the single image of the same seed
    torch.testing.assert_close(pair[:1], samples(rt, txt2img(short=True)), rtol=1e-5, atol=1e-5)


def test_comfyuis_loaders_feed_these_nodes_as_the_test_bridges_do(rt):
    """UNETLoader/DualCLIPLoader (on a pipeline folder) give the MODEL and CLIP the test-only
    bridge nodes make from fluxloom's loaders: the same run, bit for bit."""
    bridged = txt2img(seed=12)
    loaded = txt2img(seed=12)
    unet = {"unet_name": "tiny-dev", "weight_dtype": "default"}
    loaded["model"] = {"class_type": "UNETLoader", "inputs": unet}
    loaded["clip"] = {
        "class_type": "DualCLIPLoader",
        "inputs": {"clip_name1": "tiny-dev", "clip_name2": "tiny-dev", "type": "flux", "device": "default"},
    }
    assert torch.equal(samples(rt, loaded), samples(rt, bridged))
