"""SamplerCustomAdvanced and its parts (RandomNoise, DisableNoise, BasicGuider, CFGGuider,
KSamplerSelect, BasicScheduler, ModelSamplingFlux) through the executor, node to node."""

from __future__ import annotations

import pytest
import torch

from nodes.base import NodeContext, NodeEnv
from nodes.comfy import model_sampling as ms
from nodes.comfy import schedulers as sc
from nodes.comfy.custom_sampling import basic_guider, sampler_custom_advanced
from nodes.comfy.values import DiffusionModel, Guider, Noise, Sampler
from nodes.flux.handles import ModelHandle
from tests.comfy_nodes.graphs import (
    empty,
    encode_prompt,
    keep,
    ksampler,
    models,
    random_latent_node,
    text,
    value_of,
)


def custom(noise: list, guider: list, sigmas: list, latent: list, sampler: list = ("select", 0)) -> dict:
    inputs = {
        "noise": noise,
        "guider": guider,
        "sampler": list(sampler),
        "sigmas": sigmas,
        "latent_image": latent,
    }
    return {"class_type": "SamplerCustomAdvanced", "inputs": inputs}


def basic_guider_node(conditioning: str = "pos") -> dict:
    return {"class_type": "BasicGuider", "inputs": {"model": ["model", 0], "conditioning": [conditioning, 0]}}


DISABLE_NOISE = {"class_type": "DisableNoise", "inputs": {}}


@pytest.mark.parametrize("source", ["tiny-dev", "tiny-schnell"])
def test_sampler_custom_advanced_with_flux_sigmas_equals_flux_sampler(rt, source):
    """FluxSampler's own sigmas, the same seed, euler, BasicGuider on the same conditioning:
    torch.equal latents (fp32, same transformer)."""
    prompt = models(source)
    prompt["pos"] = text("a castle on a hill")
    prompt["empty"] = empty(width=64, height=48)
    prompt["flux_sampler"] = {
        "class_type": "FluxSampler",
        "inputs": {
            "model": ["flux", 0],
            "positive": ["pos", 0],
            "latent": ["empty", 0],
            "seed": 42,
            "steps": 4,
            "guidance": 3.5,
            "true_cfg_scale": 1.0,
            "denoise": 1.0,
        },
    }
    prompt["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}}
    prompt["guider"] = basic_guider_node()
    prompt["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["sigmas"] = {
        "class_type": "TestFluxSigmas",
        "inputs": {"model": ["flux", 0], "width": 64, "height": 48, "steps": 4},
    }
    prompt["custom"] = custom(["noise", 0], ["guider", 0], ["sigmas", 0], ["empty", 0])
    prompt["keep_flux"] = keep(["flux_sampler", 0])
    prompt["keep_custom"] = keep(["custom", 1])
    reference = value_of(rt, prompt, "flux_sampler")["samples"]
    output = value_of(rt, prompt, "custom", 0)["samples"]
    assert output.shape == (1, 16, 6, 8)
    assert torch.equal(output, reference)
    # euler's last step lands on its own denoised estimate, so the two outputs agree too
    assert torch.equal(value_of(rt, prompt, "custom", 1)["samples"], output)


def custom_run(**changes) -> dict:
    """models → EncodePrompt → RandomNoise, BasicGuider, KSamplerSelect, BasicScheduler →
    SamplerCustomAdvanced."""
    prompt = models(changes.pop("source", "tiny-dev"))
    prompt.update(pos=encode_prompt("a boat"), neg=encode_prompt("fog"), empty=empty())
    prompt["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 8}}
    prompt["guider"] = basic_guider_node()
    prompt["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["sigmas"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": ["model", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0},
    }
    prompt["custom"] = custom(["noise", 0], ["guider", 0], ["sigmas", 0], ["empty", 0])
    prompt["out"] = keep(["custom", 0])
    prompt.update(changes)
    return prompt


def test_custom_sampling_with_basic_scheduler_equals_ksampler(rt):
    """RandomNoise + BasicGuider + KSamplerSelect + BasicScheduler is KSampler at cfg 1."""
    prompt = custom_run()
    prompt["ks"] = ksampler(["empty", 0], seed=8, steps=3)
    prompt["keep_ks"] = keep(["ks", 0])
    assert torch.equal(value_of(rt, prompt, "custom")["samples"], value_of(rt, prompt, "ks")["samples"])
    # and CFGGuider is KSampler's cfg
    prompt["guider"] = {
        "class_type": "CFGGuider",
        "inputs": {"model": ["model", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 2.5},
    }
    prompt["ks"]["inputs"]["cfg"] = 2.5
    assert torch.equal(value_of(rt, prompt, "custom")["samples"], value_of(rt, prompt, "ks")["samples"])


def test_disable_noise_samples_the_latent_as_it_is(rt):
    """DisableNoise is KSamplerAdvanced's add_noise disabled: the input latent, unnoised."""
    prompt = custom_run(noise=DISABLE_NOISE, empty=random_latent_node(3))
    quiet = value_of(rt, prompt, "custom")["samples"]
    assert not torch.equal(quiet, value_of(rt, custom_run(empty=random_latent_node(3)), "custom")["samples"])
    prompt["adv"] = {"class_type": "KSamplerAdvanced", "inputs": dict(ksampler(["empty", 0])["inputs"])}
    inputs = prompt["adv"]["inputs"]
    del inputs["seed"], inputs["denoise"]
    inputs.update(add_noise="disable", noise_seed=0, steps=3, start_at_step=0, end_at_step=10000)
    inputs.update(return_with_leftover_noise="disable", negative=["pos", 0])
    prompt["keep_adv"] = keep(["adv", 0])
    assert torch.equal(value_of(rt, prompt, "adv")["samples"], quiet)


def test_basic_scheduler_uses_the_models_sigma_table(rt):
    def sigmas(source, **patch):
        prompt = custom_run(source=source, **patch)
        prompt["keep_sigmas"] = keep(["sigmas", 0])
        return value_of(rt, prompt, "sigmas")

    assert torch.equal(sigmas("tiny-dev"), sc.scheduler_sigmas(ms.flux_dev(), "simple", 3))
    assert torch.equal(sigmas("tiny-schnell"), sc.scheduler_sigmas(ms.flux_schnell(), "simple", 3))
    # ModelSamplingFlux sets FLUX's shift from the size, for dev and schnell alike
    shifted = {"class_type": "ModelSamplingFlux", "inputs": {"model": ["model", 0], "max_shift": 1.15}}
    shifted["inputs"].update(base_shift=0.5, width=512, height=256)
    expected = sc.scheduler_sigmas(
        ms.FluxModelSampling(shift=ms.shift_for_resolution(1.15, 0.5, 512, 256)), "simple", 3
    )
    for source in ("tiny-dev", "tiny-schnell"):
        prompt = custom_run(source=source, shifted=shifted)
        prompt["sigmas"]["inputs"]["model"] = ["shifted", 0]
        prompt["keep_sigmas"] = keep(["sigmas", 0])
        assert torch.equal(value_of(rt, prompt, "sigmas"), expected)


def test_model_sampling_flux_changes_what_ksampler_makes(rt):
    prompt = custom_run()
    prompt["ks"] = ksampler(["empty", 0], seed=8, steps=3)
    prompt["keep_ks"] = keep(["ks", 0])
    plain = value_of(rt, prompt, "ks")["samples"]
    prompt["shifted"] = {
        "class_type": "ModelSamplingFlux",
        "inputs": {"model": ["model", 0], "max_shift": 1.15, "base_shift": 0.5, "width": 256, "height": 256},
    }
    prompt["ks"]["inputs"]["model"] = ["shifted", 0]
    assert not torch.equal(value_of(rt, prompt, "ks")["samples"], plain)


def test_values_are_small_frozen_settings():
    assert Noise(3) == Noise(3) and Noise(3) != Noise(4) and Noise(0, add=False) != Noise(0)
    assert Sampler("euler") == Sampler("euler") and hash(Sampler("euler")) == hash(Sampler("euler"))
    latent = torch.ones(1, 16, 2, 2)
    assert torch.equal(Noise(5).generate(latent), Noise(5).generate(latent))
    assert not Noise(5, add=False).generate(latent).any()
    with pytest.raises(AttributeError):
        Noise(1).seed = 2  # frozen
    assert all(v.cache_size() < 1024 for v in (Noise(1), Sampler("euler")))
    assert Guider.__dataclass_params__.frozen


def test_wrong_values_are_refused_by_name():
    ctx = NodeContext(env=NodeEnv())
    model = DiffusionModel(ModelHandle("FLUX_MODEL", "x", "/nowhere", "none", "fp32"))
    guider = Guider(model, torch.zeros(1))  # a tensor where a conditioning belongs
    latent = {"samples": torch.zeros(1, 16, 2, 2)}
    with pytest.raises(ValueError, match="SamplerCustomAdvanced: noise must come from a noise node"):
        sampler_custom_advanced(ctx, "noise", guider, Sampler("euler"), torch.ones(2), latent)
    with pytest.raises(ValueError, match="SamplerCustomAdvanced: sigmas must be a 1-D tensor"):
        sampler_custom_advanced(ctx, Noise(1), guider, Sampler("euler"), [1.0, 0.0], latent)
    with pytest.raises(ValueError, match="SamplerCustomAdvanced: positive must come from a text encoder"):
        sampler_custom_advanced(ctx, Noise(1), guider, Sampler("euler"), torch.ones(2), latent)
    with pytest.raises(ValueError, match="BasicGuider: model must come from a model loader"):
        basic_guider(ctx, "a model", None)
