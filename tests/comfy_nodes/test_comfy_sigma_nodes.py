"""ComfyUI's SIGMAS nodes beyond BasicScheduler (nodes/comfy/sigmas.py), its Sampler… nodes
(nodes/comfy/sampler_nodes.py), SamplerCustom, AddNoise and DualCFGGuider: declared as ComfyUI declares them
(inputs, defaults, outputs, categories at a125cd8, written out below from its
comfy_extras/nodes_custom_sampler.py), computing the published schedules, and, through the
executor on a tiny real FLUX transformer, agreeing with the runs they stand for: a schedule split
in two sampled by two nodes equals the whole run, SamplerCustom is SamplerCustomAdvanced with
CFGGuider, SamplerEulerAncestral with eta 0 is euler."""

from __future__ import annotations

import math

import pytest
import torch

import nodes
from nodes.base import NodeContext, NodeEnv
from nodes.comfy import model_sampling as ms
from nodes.comfy.values import Sampler
from tests.comfy_nodes.graphs import empty, encode_prompt, keep, models, random_latent_node, value_of

SIGMA_RANGE = [("sigma_max", 14.614642, 0.0, 5000.0), ("sigma_min", 0.0291675, 0.0, 5000.0)]
# class_type → (category, [(input, default, min, max) or (input, socket type) or (input, [choices])], outputs)
COMFYUI = {
    "KarrasScheduler": (
        "sampling/custom_sampling/schedulers",
        [("steps", 20, 1, 10000), *SIGMA_RANGE, ("rho", 7.0, 0.0, 100.0)],
        [("SIGMAS", "SIGMAS")],
    ),
    "ExponentialScheduler": (
        "sampling/custom_sampling/schedulers",
        [("steps", 20, 1, 10000), *SIGMA_RANGE],
        [("SIGMAS", "SIGMAS")],
    ),
    "PolyexponentialScheduler": (
        "sampling/custom_sampling/schedulers",
        [("steps", 20, 1, 10000), *SIGMA_RANGE, ("rho", 1.0, 0.0, 100.0)],
        [("SIGMAS", "SIGMAS")],
    ),
    "LaplaceScheduler": (
        "sampling/custom_sampling/schedulers",
        [("steps", 20, 1, 10000), *SIGMA_RANGE, ("mu", 0.0, -10.0, 10.0), ("beta", 0.5, 0.0, 10.0)],
        [("SIGMAS", "SIGMAS")],
    ),
    "VPScheduler": (
        "sampling/custom_sampling/schedulers",
        [("steps", 20, 1, 10000), ("beta_d", 19.9, 0.0, 5000.0), ("beta_min", 0.1, 0.0, 5000.0),
         ("eps_s", 0.001, 0.0, 1.0)],
        [("SIGMAS", "SIGMAS")],
    ),
    "BetaSamplingScheduler": (
        "sampling/custom_sampling/schedulers",
        [("model", "MODEL"), ("steps", 20, 1, 10000), ("alpha", 0.6, 0.0, 50.0), ("beta", 0.6, 0.0, 50.0)],
        [("SIGMAS", "SIGMAS")],
    ),
    "SplitSigmas": (
        "sampling/custom_sampling/sigmas",
        [("sigmas", "SIGMAS"), ("step", 0, 0, 10000)],
        [("SIGMAS", "high_sigmas"), ("SIGMAS", "low_sigmas")],
    ),
    "SplitSigmasDenoise": (
        "sampling/custom_sampling/sigmas",
        [("sigmas", "SIGMAS"), ("denoise", 1.0, 0.0, 1.0)],
        [("SIGMAS", "high_sigmas"), ("SIGMAS", "low_sigmas")],
    ),
    "FlipSigmas": ("sampling/custom_sampling/sigmas", [("sigmas", "SIGMAS")], [("SIGMAS", "SIGMAS")]),
    "SetFirstSigma": (
        "sampling/custom_sampling/sigmas",
        [("sigmas", "SIGMAS"), ("sigma", 136.0, 0.0, 20000.0)],
        [("SIGMAS", "SIGMAS")],
    ),
    "ExtendIntermediateSigmas": (
        "sampling/custom_sampling/sigmas",
        [("sigmas", "SIGMAS"), ("steps", 2, 1, 100), ("start_at_sigma", -1.0, -1.0, 20000.0),
         ("end_at_sigma", 12.0, 0.0, 20000.0), ("spacing", ["linear", "cosine", "sine"])],
        [("SIGMAS", "SIGMAS")],
    ),
    "SamplingPercentToSigma": (
        "sampling/custom_sampling/sigmas",
        [("model", "MODEL"), ("sampling_percent", 0.0, 0.0, 1.0), ("return_actual_sigma", "BOOLEAN")],
        [("FLOAT", "sigma_value")],
    ),
    "SamplerEulerAncestral": (
        "sampling/custom_sampling/samplers",
        [("eta", 1.0, 0.0, 100.0), ("s_noise", 1.0, 0.0, 100.0)],
        [("SAMPLER", "SAMPLER")],
    ),
    "SamplerDPMPP_2S_Ancestral": (
        "sampling/custom_sampling/samplers",
        [("eta", 1.0, 0.0, 100.0), ("s_noise", 1.0, 0.0, 100.0)],
        [("SAMPLER", "SAMPLER")],
    ),
    "SamplerDPMPP_SDE": (
        "sampling/custom_sampling/samplers",
        [("eta", 1.0, 0.0, 100.0), ("s_noise", 1.0, 0.0, 100.0), ("r", 0.5, 0.0, 100.0),
         ("noise_device", ["gpu", "cpu"])],
        [("SAMPLER", "SAMPLER")],
    ),
    "SamplerDPMPP_2M_SDE": (
        "sampling/custom_sampling/samplers",
        [("solver_type", ["midpoint", "heun"]), ("eta", 1.0, 0.0, 100.0), ("s_noise", 1.0, 0.0, 100.0),
         ("noise_device", ["gpu", "cpu"])],
        [("SAMPLER", "SAMPLER")],
    ),
    "SamplerDPMPP_3M_SDE": (
        "sampling/custom_sampling/samplers",
        [("eta", 1.0, 0.0, 100.0), ("s_noise", 1.0, 0.0, 100.0), ("noise_device", ["gpu", "cpu"])],
        [("SAMPLER", "SAMPLER")],
    ),
    "SamplerLMS": ("sampling/custom_sampling/samplers", [("order", 4, 1, 100)], [("SAMPLER", "SAMPLER")]),
    "SamplerCustom": (
        "sampling/custom_sampling",
        [("model", "MODEL"), ("add_noise", "BOOLEAN"), ("noise_seed", 0, 0, 2**64 - 1),
         ("cfg", 8.0, 0.0, 100.0), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
         ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
        [("LATENT", "output"), ("LATENT", "denoised_output")],
    ),
    "DualCFGGuider": (
        "sampling/custom_sampling/guiders",
        [("model", "MODEL"), ("cond1", "CONDITIONING"), ("cond2", "CONDITIONING"),
         ("negative", "CONDITIONING"), ("cfg_conds", 8.0, 0.0, 100.0),
         ("cfg_cond2_negative", 8.0, 0.0, 100.0), ("style", ["regular", "nested"])],
        [("GUIDER", "GUIDER")],
    ),
    "AddNoise": (
        "_for_testing/custom_sampling/noise",
        [("model", "MODEL"), ("noise", "NOISE"), ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
        [("LATENT", "LATENT")],
    ),
}  # fmt: skip


@pytest.mark.parametrize("class_type", COMFYUI)
def test_declared_as_comfyui_declares_them(class_type):
    info = nodes.load_all().get(class_type).object_info()
    category, inputs, outputs = COMFYUI[class_type]
    assert info["category"] == category and info["display_name"] == class_type
    assert info["input_order"]["required"] == [spec[0] for spec in inputs]
    for name, *spec in inputs:
        entry = info["input"]["required"][name]
        if len(spec) == 1 and isinstance(spec[0], list):
            assert entry[0] == spec[0], name
        elif len(spec) == 1:
            assert entry[0] == spec[0], name
        else:
            default, low, high = spec
            assert (entry[1]["default"], entry[1]["min"], entry[1]["max"]) == (default, low, high), name
    assert list(zip(info["output"], info["output_name"], strict=True)) == outputs


# --- the schedules --------------------------------------------------------------------------


def run_node(class_type: str, **inputs):
    d = nodes.load_all().get(class_type)
    return d.run(NodeContext(env=NodeEnv()), **inputs)


def test_standalone_schedulers_follow_their_formulas():
    n, lo, hi = 5, 0.05, 2.0
    (karras,) = run_node("KarrasScheduler", steps=n, sigma_max=hi, sigma_min=lo, rho=7.0)
    expected = [(hi ** (1 / 7) + i / (n - 1) * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7 for i in range(n)]
    assert torch.allclose(karras, torch.tensor([*expected, 0.0]))
    (expo,) = run_node("ExponentialScheduler", steps=n, sigma_max=hi, sigma_min=lo)
    ratios = expo[1:n] / expo[: n - 1]
    assert torch.allclose(ratios, ratios[0].expand(n - 1)) and expo[-1] == 0
    assert math.isclose(expo[0], hi, rel_tol=1e-6) and math.isclose(expo[n - 1], lo, rel_tol=1e-5)
    (poly1,) = run_node("PolyexponentialScheduler", steps=n, sigma_max=hi, sigma_min=lo, rho=1.0)
    assert torch.allclose(poly1, expo)
    (poly2,) = run_node("PolyexponentialScheduler", steps=n, sigma_max=hi, sigma_min=lo, rho=2.0)
    assert poly2[2] < expo[2]  # rho > 1 spends more of the steps at low noise
    (laplace,) = run_node("LaplaceScheduler", steps=n, sigma_max=hi, sigma_min=lo, mu=0.0, beta=0.5)
    assert len(laplace) == n and laplace[0] == hi and laplace[-1] == lo  # clamped ends, no final 0
    assert math.isclose(laplace[2], 1.0, rel_tol=1e-4)  # the median of Laplace(0, b) in log sigma: 0
    (vp,) = run_node("VPScheduler", steps=3, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    t = torch.tensor([1.0, 0.5005, 0.001])
    assert torch.allclose(vp[:3], torch.sqrt(torch.expm1(19.9 * t**2 / 2 + 0.1 * t))) and vp[-1] == 0


def test_a_bad_range_names_the_node():
    with pytest.raises(ValueError, match="KarrasScheduler: needs 0 < sigma_min <= sigma_max"):
        run_node("KarrasScheduler", steps=4, sigma_max=0.5, sigma_min=1.0, rho=7.0)


SCHEDULE = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])  # exact in float32


def test_split_flip_set_and_extend_follow_comfyui_and_leave_their_input_alone():
    original = SCHEDULE.clone()
    high, low = run_node("SplitSigmas", sigmas=SCHEDULE, step=2)
    assert high.tolist() == [1.0, 0.75, 0.5] and low.tolist() == [0.5, 0.25, 0.0]
    high, low = run_node("SplitSigmas", sigmas=SCHEDULE, step=10)
    assert torch.equal(high, SCHEDULE) and low.tolist() == []
    high, low = run_node("SplitSigmasDenoise", sigmas=SCHEDULE, denoise=0.5)
    assert high.tolist() == [1.0, 0.75, 0.5] and low.tolist() == [0.5, 0.25, 0.0]
    high, low = run_node("SplitSigmasDenoise", sigmas=SCHEDULE, denoise=0.0)
    assert high.tolist() == [] and low.tolist() == [0.0]
    (flipped,) = run_node("FlipSigmas", sigmas=SCHEDULE)
    assert torch.allclose(flipped, torch.tensor([0.0001, 0.25, 0.5, 0.75, 1.0]))
    (first,) = run_node("SetFirstSigma", sigmas=SCHEDULE, sigma=0.9)
    assert first.tolist()[0] == pytest.approx(0.9) and first.tolist()[1:] == SCHEDULE.tolist()[1:]
    (extended,) = run_node(
        "ExtendIntermediateSigmas",
        sigmas=SCHEDULE,
        steps=2,
        start_at_sigma=0.9,
        end_at_sigma=0.3,
        spacing="linear",
    )
    assert extended.tolist() == [1.0, 0.75, 0.625, 0.5, 0.375, 0.25, 0.0]
    (bunched,) = run_node(
        "ExtendIntermediateSigmas",
        sigmas=SCHEDULE,
        steps=2,
        start_at_sigma=-1,
        end_at_sigma=0.9,
        spacing="cosine",
    )
    assert bunched.tolist()[:2] == [1.0, pytest.approx(1.0 - math.sin(math.pi / 4) * 0.25)]
    assert torch.equal(SCHEDULE, original)


def test_sigmas_that_are_not_a_schedule_name_the_node():
    with pytest.raises(ValueError, match="FlipSigmas: sigmas must be a 1-D tensor"):
        run_node("FlipSigmas", sigmas=torch.zeros(2, 2))


def test_sampler_nodes_carry_their_settings():
    (s,) = run_node("SamplerDPMPP_2M_SDE", solver_type="heun", eta=0.5, s_noise=1.0, noise_device="cpu")
    assert s == Sampler("dpmpp_2m_sde", (("eta", 0.5), ("s_noise", 1.0), ("solver_type", "heun")))
    (g,) = run_node("SamplerDPMPP_SDE", eta=1.0, s_noise=1.0, r=0.5, noise_device="gpu")
    assert g.name == "dpmpp_sde_gpu" and dict(g.options)["r"] == 0.5


# --- through the executor, on a tiny FLUX transformer ---------------------------------------


def base(sampler: dict | None = None, **changes) -> dict:
    """models → EncodePrompt → RandomNoise, CFGGuider, BasicScheduler (4 steps) → SamplerCustomAdvanced."""
    prompt = models("tiny-dev")
    prompt.update(pos=encode_prompt("a lighthouse"), neg=encode_prompt("haze"), empty=empty())
    prompt["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    prompt["quiet"] = {"class_type": "DisableNoise", "inputs": {}}
    prompt["guider"] = {
        "class_type": "CFGGuider",
        "inputs": {"model": ["model", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 1.0},
    }
    prompt["select"] = sampler or {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["sigmas"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": ["model", 0], "scheduler": "simple", "steps": 4, "denoise": 1.0},
    }
    prompt["whole"] = advanced(["noise", 0], ["sigmas", 0], ["empty", 0])
    prompt["out"] = keep(["whole", 0])
    prompt.update(changes)
    return prompt


def advanced(noise: list, sigmas: list, latent: list) -> dict:
    inputs = {"noise": noise, "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": sigmas}
    return {"class_type": "SamplerCustomAdvanced", "inputs": {**inputs, "latent_image": latent}}


def test_a_split_schedule_sampled_in_two_runs_equals_the_whole_run(rt):
    """ComfyUI's two-stage pattern: SplitSigmas, the high part with noise, the low part from its
    output without (euler is deterministic, so only the round trip through the latent scaling
    between the runs may differ)."""
    prompt = base()
    prompt["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sigmas", 0], "step": 2}}
    prompt["first"] = advanced(["noise", 0], ["split", 0], ["empty", 0])
    prompt["second"] = advanced(["quiet", 0], ["split", 1], ["first", 0])
    prompt["out2"] = keep(["second", 0])
    whole = value_of(rt, prompt, "whole")["samples"]
    two = value_of(rt, prompt, "second")["samples"]
    assert torch.allclose(two, whole, atol=1e-5) and not torch.equal(
        whole, value_of(rt, prompt, "first")["samples"]
    )


def test_sampler_custom_is_sampler_custom_advanced_with_cfg_guider(rt):
    prompt = base()
    prompt["guider"]["inputs"]["cfg"] = 2.0
    prompt["custom"] = {
        "class_type": "SamplerCustom",
        "inputs": {
            "model": ["model", 0],
            "add_noise": True,
            "noise_seed": 5,
            "cfg": 2.0,
            "positive": ["pos", 0],
            "negative": ["neg", 0],
            "sampler": ["select", 0],
            "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0],
        },
    }
    prompt["out2"] = keep(["custom", 1])
    assert torch.equal(value_of(rt, prompt, "custom")["samples"], value_of(rt, prompt, "whole")["samples"])


def test_sampler_nodes_reach_the_sampler(rt):
    """SamplerEulerAncestral with eta 0 is euler; with eta 1 it is not; its settings change the
    run; the 2M SDE solver types differ; SamplerLMS's order matters."""
    euler = value_of(rt, base(), "whole")["samples"]

    def with_sampler(class_type: str, **inputs) -> torch.Tensor:
        return value_of(rt, base({"class_type": class_type, "inputs": inputs}), "whole")["samples"]

    assert torch.allclose(with_sampler("SamplerEulerAncestral", eta=0.0, s_noise=1.0), euler, atol=1e-5)
    noisy = with_sampler("SamplerEulerAncestral", eta=1.0, s_noise=1.0)
    assert not torch.allclose(noisy, euler, atol=1e-3)
    assert not torch.equal(with_sampler("SamplerEulerAncestral", eta=1.0, s_noise=0.5), noisy)
    midpoint = with_sampler(
        "SamplerDPMPP_2M_SDE", solver_type="midpoint", eta=1.0, s_noise=1.0, noise_device="cpu"
    )
    heun = with_sampler("SamplerDPMPP_2M_SDE", solver_type="heun", eta=1.0, s_noise=1.0, noise_device="cpu")
    assert not torch.equal(midpoint, heun)
    # On the CPU the "gpu" noise device draws the same Brownian tree.
    gpu = with_sampler(
        "SamplerDPMPP_2M_SDE", solver_type="midpoint", eta=1.0, s_noise=1.0, noise_device="gpu"
    )
    assert torch.equal(gpu, midpoint)
    assert not torch.equal(with_sampler("SamplerLMS", order=1), with_sampler("SamplerLMS", order=4))


def test_add_noise_noises_a_latent_to_the_schedules_span(rt):
    prompt = base(latent=random_latent_node(4))
    prompt["noised"] = {
        "class_type": "AddNoise",
        "inputs": {
            "model": ["model", 0],
            "noise": ["noise", 0],
            "sigmas": ["split", 1],
            "latent_image": ["latent", 0],
        },
    }
    prompt["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sigmas", 0], "step": 2}}
    prompt["out"] = keep(["noised", 0])
    latent = value_of(rt, prompt, "latent")["samples"]
    low = value_of(rt, prompt, "split", 1)
    noised = value_of(rt, prompt, "noised")["samples"]
    from nodes.comfy.noise import prepare_noise

    span = float(low[0] - low[-1])
    expected = ms.latent_out(span * prepare_noise(latent, 5) + (1 - span) * ms.latent_in(latent))
    assert 0 < span < 1 and torch.allclose(noised, expected, atol=1e-6)


def test_sampling_percent_to_sigma_reads_the_models_table(rt):
    prompt = base()
    prompt["pct"] = {
        "class_type": "SamplingPercentToSigma",
        "inputs": {"model": ["model", 0], "sampling_percent": 0.5, "return_actual_sigma": False},
    }
    prompt["out"] = keep(["pct", 0])
    half = value_of(rt, prompt, "pct")
    assert half == pytest.approx(ms.flux_time_shift(ms.FLUX_DEV_SHIFT, 0.5))  # tiny-dev: FLUX.1-dev's table
    prompt["pct"]["inputs"].update(sampling_percent=0.0, return_actual_sigma=True)
    assert value_of(rt, prompt, "pct") == pytest.approx(float(ms.flux_dev().sigma_max))


def test_dual_cfg_combines_three_predictions_as_comfyui():
    """On predictions that are constants per conditioning, the two styles' formulas exactly."""
    from nodes.comfy.guiders import dual_cfg_guider

    values = {"c1": torch.tensor([1.0]), "c2": torch.tensor([3.0]), "neg": torch.tensor([7.0])}
    calls: list[str] = []

    def predict(x, sigma, cond):
        calls.append(cond)
        return values[cond]

    x, sigma = torch.zeros(1), torch.tensor(0.5)
    regular = dual_cfg_guider(predict, "c1", "c2", "neg", 2.0, 4.0, nested=False)(x, sigma)
    assert regular.item() == 7 + 4 * (3 - 7) + 2 * (1 - 3)
    nested = dual_cfg_guider(predict, "c1", "c2", "neg", 2.0, 4.0, nested=True)(x, sigma)
    assert nested.item() == 7 + 4 * ((3 + 2 * (1 - 3)) - 7)
    calls.clear()
    assert dual_cfg_guider(predict, "c1", "c2", "neg", 2.0, 1.0, nested=False)(x, sigma).item() == 3 + 2 * (
        1 - 3
    )
    assert calls == ["c1", "c2"]  # cfg_cond2_negative 1: no negative pass
    calls.clear()
    assert dual_cfg_guider(predict, "c1", "c2", "neg", 1.0, 1.0, nested=False)(x, sigma).item() == 1
    assert calls == ["c1"]


def test_dual_cfg_guider_with_one_cfg_at_1_is_cfg_guider(rt):
    prompt = base()
    prompt["third"] = encode_prompt("a storm")
    prompt["guider"]["inputs"]["cfg"] = 2.5  # CFGGuider(pos, neg, 2.5)
    prompt["dual"] = {
        "class_type": "DualCFGGuider",
        "inputs": {
            "model": ["model", 0],
            "cond1": ["pos", 0],
            "cond2": ["neg", 0],
            "negative": ["third", 0],
            "cfg_conds": 2.5,
            "cfg_cond2_negative": 1.0,
            "style": "regular",
        },
    }
    prompt["dual_run"] = advanced(["noise", 0], ["sigmas", 0], ["empty", 0])
    prompt["dual_run"]["inputs"]["guider"] = ["dual", 0]
    prompt["out2"] = keep(["dual_run", 0])
    cfg = value_of(rt, prompt, "whole")["samples"]
    assert torch.equal(value_of(rt, prompt, "dual_run")["samples"], cfg)
    prompt["dual"]["inputs"]["cfg_cond2_negative"] = 2.0  # now the negative counts, differently per style
    regular = value_of(rt, prompt, "dual_run")["samples"]
    prompt["dual"]["inputs"]["style"] = "nested"
    nested = value_of(rt, prompt, "dual_run")["samples"]
    assert not torch.allclose(regular, cfg, atol=1e-4) and not torch.allclose(nested, regular, atol=1e-4)
