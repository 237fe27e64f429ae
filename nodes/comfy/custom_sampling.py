"""ComfyUI's custom-sampling nodes: SamplerCustomAdvanced and the parts it is wired from (NOISE:
RandomNoise, DisableNoise; GUIDER: BasicGuider, CFGGuider, DualCFGGuider; SAMPLER: KSamplerSelect, and the
Sampler… nodes of sampler_nodes.py; SIGMAS: BasicScheduler, and sigmas.py), SamplerCustom (the
same with its guider and noise inline), AddNoise, and ModelSamplingFlux, which sets a MODEL's
time shift from the image size. Behaviour as comfy_extras/nodes_custom_sampler.py and
nodes_model_advanced.py (a125cd8)."""

from __future__ import annotations

import torch

from nodes.base import MAX_SEED, Boolean, Combo, Float, Input, Int, NodeContext, Output, Socket, node
from nodes.comfy import model_sampling as ms
from nodes.comfy import schedulers as sc
from nodes.comfy.latents import MAX_RESOLUTION, latent_samples, with_samples
from nodes.comfy.sampling import (
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    check_model,
    model_sampling_for,
    run_sampling,
)
from nodes.comfy.types import GUIDER, MODEL, NOISE, SAMPLER, SIGMAS
from nodes.comfy.values import DiffusionModel, DualGuider, Guider, Noise, Sampler
from nodes.flux.types import CONDITIONING, LATENT

CATEGORY = "sampling/custom_sampling"
CFG = Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)


@node(
    "SamplerCustomAdvanced",
    category=CATEGORY,
    display_name="SamplerCustomAdvanced",
    description=(
        "Sample a latent from its parts: noise, guider (model and conditioning), sampler and sigmas. "
        "denoised_output is the model's last estimate of the clean latent."
    ),
    inputs=[
        Input("noise", Socket(NOISE)),
        Input("guider", Socket(GUIDER)),
        Input("sampler", Socket(SAMPLER)),
        Input("sigmas", Socket(SIGMAS)),
        Input("latent_image", Socket(LATENT)),
    ],
    outputs=[Output(LATENT, "output"), Output(LATENT, "denoised_output")],
)
def sampler_custom_advanced(
    ctx: NodeContext, noise, guider, sampler, sigmas, latent_image
) -> tuple[dict, dict]:
    where = "SamplerCustomAdvanced"
    for name, value, kind in (
        ("noise", noise, Noise),
        ("guider", guider, Guider),
        ("sampler", sampler, Sampler),
    ):
        if not isinstance(value, kind):
            raise ValueError(f"{where}: {name} must come from a {name} node, not {type(value).__name__}")
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise ValueError(f"{where}: sigmas must be a 1-D tensor of noise levels (BasicScheduler)")
    return run_sampling(
        ctx, where, guider, sampler.name, sigmas.float(), noise, latent_image, dict(sampler.options)
    )


@node(
    "SamplerCustom",
    category=CATEGORY,
    display_name="SamplerCustom",
    description=(
        "SamplerCustomAdvanced with its guider and noise inline: CFG with a negative (cfg 1: the "
        "positive alone) and seeded noise unless add_noise is off (the seed still seeds the sampler's "
        "extra noise then, as in ComfyUI)."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("add_noise", Boolean(default=True)),
        Input("noise_seed", Int(default=0, min=0, max=MAX_SEED, control_after_generate=True)),
        Input("cfg", CFG),
        Input("positive", Socket(CONDITIONING)),
        Input("negative", Socket(CONDITIONING)),
        Input("sampler", Socket(SAMPLER)),
        Input("sigmas", Socket(SIGMAS)),
        Input("latent_image", Socket(LATENT)),
    ],
    outputs=[Output(LATENT, "output"), Output(LATENT, "denoised_output")],
)
def sampler_custom(
    ctx: NodeContext, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image
) -> tuple[dict, dict]:
    guider = Guider(check_model(model, "SamplerCustom"), positive, negative, float(cfg))
    noise = Noise(int(noise_seed), add=bool(add_noise))
    return sampler_custom_advanced(ctx, noise, guider, sampler, sigmas, latent_image)


@node(
    "AddNoise",
    category="_for_testing/custom_sampling/noise",
    display_name="AddNoise",
    description=(
        "Noise a latent to a schedule's span (|first - last| sigma; the one sigma if only one), as a "
        "sampler starting there would, without sampling."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("noise", Socket(NOISE)),
        Input("sigmas", Socket(SIGMAS)),
        Input("latent_image", Socket(LATENT)),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def add_noise(ctx: NodeContext, model, noise, sigmas, latent_image) -> tuple[dict]:
    where = "AddNoise"
    check_model(model, where)  # FLUX's noise scaling is the same for every FLUX sigma table
    if not isinstance(noise, Noise):
        raise ValueError(f"{where}: noise must come from a noise node, not {type(noise).__name__}")
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise ValueError(f"{where}: sigmas must be a 1-D tensor of noise levels (a scheduler node)")
    if len(sigmas) == 0:
        return (latent_image,)
    samples = latent_samples(latent_image, where)
    fresh = noise.generate(samples, latent_image.get("batch_index"))
    scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
    latent = ms.latent_in(samples) if torch.count_nonzero(samples) > 0 else samples  # an empty latent stays
    noisy = ms.latent_out(ms.noise_scaling(scale.float(), fresh, latent))
    return (with_samples(latent_image, torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)),)


@node(
    "RandomNoise",
    category=f"{CATEGORY}/noise",
    display_name="RandomNoise",
    description="Seeded starting noise, as ComfyUI draws it (CPU generator, the latent's shape).",
    inputs=[Input("noise_seed", Int(default=0, min=0, max=MAX_SEED, control_after_generate=True))],
    outputs=[Output(NOISE, "NOISE")],
)
def random_noise(ctx: NodeContext, noise_seed: int) -> tuple[Noise]:
    return (Noise(int(noise_seed)),)


@node(
    "DisableNoise",
    category=f"{CATEGORY}/noise",
    display_name="DisableNoise",
    description="No starting noise: sample the latent as it is (e.g. the second half of a split run).",
    outputs=[Output(NOISE, "NOISE")],
)
def disable_noise(ctx: NodeContext) -> tuple[Noise]:
    return (Noise(0, add=False),)


@node(
    "BasicGuider",
    category=f"{CATEGORY}/guiders",
    display_name="BasicGuider",
    description="Guide the model by one conditioning (FLUX.1 keeps its guidance in the conditioning).",
    inputs=[Input("model", Socket(MODEL)), Input("conditioning", Socket(CONDITIONING))],
    outputs=[Output(GUIDER, "GUIDER")],
)
def basic_guider(ctx: NodeContext, model, conditioning) -> tuple[Guider]:
    return (Guider(check_model(model, "BasicGuider"), conditioning),)


@node(
    "CFGGuider",
    category=f"{CATEGORY}/guiders",
    display_name="CFGGuider",
    description="Classifier-free guidance with a negative conditioning (cfg 1: the positive alone).",
    inputs=[
        Input("model", Socket(MODEL)),
        Input("positive", Socket(CONDITIONING)),
        Input("negative", Socket(CONDITIONING)),
        Input("cfg", CFG),
    ],
    outputs=[Output(GUIDER, "GUIDER")],
)
def cfg_guider(ctx: NodeContext, model, positive, negative, cfg: float) -> tuple[Guider]:
    return (Guider(check_model(model, "CFGGuider"), positive, negative, float(cfg)),)


@node(
    "DualCFGGuider",
    category=f"{CATEGORY}/guiders",
    display_name="DualCFGGuider",
    description=(
        "Guidance from two conditionings and a negative: cfg_conds pushes from cond2 towards cond1, "
        "cfg_cond2_negative from the negative towards cond2 (nested: towards their cfg_conds mix)."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("cond1", Socket(CONDITIONING)),
        Input("cond2", Socket(CONDITIONING)),
        Input("negative", Socket(CONDITIONING)),
        Input("cfg_conds", CFG),
        Input("cfg_cond2_negative", CFG),
        Input("style", Combo(("regular", "nested"))),
    ],
    outputs=[Output(GUIDER, "GUIDER")],
)
def dual_cfg_guider(
    ctx: NodeContext, model, cond1, cond2, negative, cfg_conds: float, cfg_cond2_negative: float, style: str
) -> tuple[DualGuider]:
    model = check_model(model, "DualCFGGuider")
    guider = DualGuider(
        model, cond1, negative, float(cfg_conds), cond2, float(cfg_cond2_negative), style == "nested"
    )
    return (guider,)


@node(
    "KSamplerSelect",
    category=f"{CATEGORY}/samplers",
    display_name="KSamplerSelect",
    description="A sampler by name.",
    inputs=[Input("sampler_name", Combo(SAMPLER_NAMES))],
    outputs=[Output(SAMPLER, "SAMPLER")],
)
def ksampler_select(ctx: NodeContext, sampler_name: str) -> tuple[Sampler]:
    return (Sampler(sampler_name),)


@node(
    "BasicScheduler",
    category=f"{CATEGORY}/schedulers",
    display_name="BasicScheduler",
    description=(
        "The model's sigmas for a number of steps; denoise < 1 keeps only the last part of a "
        "longer schedule (image-to-image)."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("scheduler", Combo(SCHEDULER_NAMES)),
        Input("steps", Int(default=20, min=1, max=10000)),
        Input("denoise", Float(default=1.0, min=0.0, max=1.0, step=0.01)),
    ],
    outputs=[Output(SIGMAS, "SIGMAS")],
)
def basic_scheduler(
    ctx: NodeContext, model, scheduler: str, steps: int, denoise: float
) -> tuple[torch.Tensor]:
    table = model_sampling_for(ctx, check_model(model, "BasicScheduler"))
    return (sc.scheduler_sigmas(table, scheduler, steps, denoise).cpu(),)


@node(
    "ModelSamplingFlux",
    category="advanced/model",
    display_name="ModelSamplingFlux",
    description=(
        "Set FLUX's time shift from the image size: max_shift at 4096 latent patches (1024x1024), "
        "base_shift at 256 (256x256), linear in between and beyond."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("max_shift", Float(default=1.15, min=0.0, max=100.0, step=0.01)),
        Input("base_shift", Float(default=0.5, min=0.0, max=100.0, step=0.01)),
        Input("width", Int(default=1024, min=16, max=MAX_RESOLUTION, step=8)),
        Input("height", Int(default=1024, min=16, max=MAX_RESOLUTION, step=8)),
    ],
    outputs=[Output(MODEL, "MODEL")],
)
def model_sampling_flux(
    ctx: NodeContext, model, max_shift: float, base_shift: float, width: int, height: int
) -> tuple[DiffusionModel]:
    model = check_model(model, "ModelSamplingFlux")
    return (model.with_shift(ms.shift_for_resolution(max_shift, base_shift, width, height)),)
