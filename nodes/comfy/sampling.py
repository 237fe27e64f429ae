"""ComfyUI's KSampler and KSamplerAdvanced, and the sampling run every ComfyUI sampler node shares.

One run, as ComfyUI's common_ksampler / SamplerCustomAdvanced make it (read at a125cd8):
1. the LATENT's samples, an all-zero latent of another channel count (EmptyLatentImage's 4)
   widened to FLUX's 16 (comfy.sample.fix_empty_latent_channels);
2. the starting noise from the NOISE source: ComfyUI's seeded CPU noise of that shape;
3. the transformer brought onto the device by the model manager, and the model's sigma table
   chosen from it: a transformer with guidance embeddings is FLUX.1-dev (ModelSamplingFlux, shift
   1.15 unless a ModelSamplingFlux node set one), one without is schnell (discrete flow, shift 1;
   ModelSamplingFlux's table when that node set a shift);
4. the sigmas (a scheduler's, or given), the guided velocity (each conditioning's own `guidance`
   or 3.5, only for transformers with guidance embeddings; true CFG with the negative when cfg is
   not 1), and `samplers.sample_latent` with progress after every step (where an interrupt stops).
A latent whose height or width in cells is odd is padded circularly to even for the transformer
and cropped back, as ComfyUI's FLUX model does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nodes.base import MAX_SEED, Combo, Float, Input, Int, NodeContext, Output, Socket, node
from nodes.comfy import guiders, samplers
from nodes.comfy import model_sampling as ms
from nodes.comfy import prompt_schedule as schedule
from nodes.comfy import schedulers as sc
from nodes.comfy.latents import latent_samples, with_samples
from nodes.comfy.types import MODEL
from nodes.comfy.values import CombinedConditioning, DiffusionModel, DualGuider, Guider, Noise
from nodes.flux import math as fm
from nodes.flux.encode import Conditioning
from nodes.flux.types import CONDITIONING, LATENT

DEFAULT_GUIDANCE = 3.5  # ComfyUI's FLUX guidance when no FluxGuidance/CLIPTextEncodeFlux set one

# The combos offer the samplers fluxloom has, in ComfyUI's order; ComfyUI's others are listed in
# docs/comfyui.md (a workflow naming one fails validation, listing these).
SAMPLER_NAMES = tuple(name for name in samplers.COMFY_SAMPLER_NAMES if name in samplers.SAMPLERS)
SCHEDULER_NAMES = tuple(sc.SCHEDULERS)

# A schedule of the model's sigma table, or given; None: no step to run (the latent comes back).
Sigmas = torch.Tensor | Callable[[ms.ModelSampling], torch.Tensor | None]


def check_model(model, where: str) -> DiffusionModel:
    if not isinstance(model, DiffusionModel):
        raise ValueError(f"{where}: model must come from a model loader (UNETLoader, CheckpointLoaderSimple)")
    return model


def model_sampling_of(transformer: torch.nn.Module, model: DiffusionModel) -> ms.ModelSampling:
    """The sigma table ComfyUI gives this model (see the module doc)."""
    return sampling_table(bool(transformer.config.guidance_embeds), model)


def sampling_table(guidance_embeds: bool, model: DiffusionModel) -> ms.ModelSampling:
    if guidance_embeds:
        return ms.flux_dev(ms.FLUX_DEV_SHIFT if model.shift is None else model.shift)
    if model.shift is not None:
        return ms.FluxModelSampling(shift=model.shift)
    return ms.flux_schnell()


def model_sampling_for(ctx: NodeContext, model: DiffusionModel) -> ms.ModelSampling:
    """The model's sigma table before sampling (BasicScheduler): from what the loader knew of the
    transformer, else from its config, which takes loading it (the model manager keeps it)."""
    if model.guidance_embeds is not None:
        return sampling_table(model.guidance_embeds, model)
    with ctx.models.use(model.transformer) as loaded:
        return model_sampling_of(loaded.module, model)


def fix_empty_latent(samples: torch.Tensor, where: str) -> torch.Tensor:
    """FLUX's 16 channels: an all-zero latent of another channel count becomes zeros of 16
    channels (ComfyUI's fix_empty_latent_channels); any other mismatch is an error."""
    if samples.shape[1] == fm.LATENT_CHANNELS:
        return samples
    if torch.count_nonzero(samples) == 0:
        b, _, h, w = samples.shape
        return torch.zeros((b, fm.LATENT_CHANNELS, h, w), dtype=samples.dtype)
    raise ValueError(
        f"{where}: FLUX samples 16-channel latents and this one has {samples.shape[1]} "
        "(a latent of another model's VAE?)"
    )


def flux_predict(transformer: torch.nn.Module) -> guiders.Predict:
    """predict(x, sigma, cond) for the guiders: one transformer call for one conditioning (already
    on the device, in the model's dtype, repeated to the batch)."""

    def predict(x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, w % 2, 0, h % 2), mode="circular") if h % 2 or w % 2 else x
        velocity = ms.flux_velocity(
            transformer,
            padded,
            sigma,
            prompt_embeds=cond.prompt_embeds,
            pooled_prompt_embeds=cond.pooled_prompt_embeds,
            txt_ids=cond.text_ids,
            guidance=DEFAULT_GUIDANCE if cond.guidance is None else cond.guidance,
        )
        return velocity[..., :h, :w]

    return predict


def _guided(loaded, guider: Guider, batch: int, table: ms.ModelSampling) -> guiders.Velocity:
    """The guider's velocity on the loaded transformer; its conditioning checked against it (a
    combined one scheduled on the model's sigma table: prompt_schedule.py)."""
    predict = schedule.scheduled(flux_predict(loaded.module))
    if isinstance(guider, DualGuider):
        conds = (guider.positive, guider.middle, guider.negative)
        first, second, negative = (schedule.ready(c, loaded, batch, table) for c in conds)
        return guiders.dual_cfg_guider(
            predict, first, second, negative, guider.cfg, guider.cfg2, guider.nested
        )
    positive = schedule.ready(guider.positive, loaded, batch, table)
    negative = None
    if not math.isclose(guider.cfg, 1.0) and guider.negative is not None:
        negative = schedule.ready(guider.negative, loaded, batch, table)
    return guiders.cfg_guider(predict, positive, negative, guider.cfg)


def run_sampling(
    ctx: NodeContext,
    where: str,
    guider: Guider,
    sampler: str,
    sigmas: Sigmas,
    noise: Noise,
    latent,
    options: dict | None = None,
) -> tuple[dict, dict]:
    """One sampling run (see the module doc): the output LATENT and the last denoised estimate
    as a LATENT (SamplerCustomAdvanced's denoised_output). `options`: the sampler's settings
    (eta, s_noise, ...) from a Sampler… node."""
    check_model(guider.model, where)
    middle = (("cond2", guider.middle),) if isinstance(guider, DualGuider) else ()
    for name, cond in (("positive", guider.positive), *middle, ("negative", guider.negative)):
        if cond is not None and not isinstance(cond, Conditioning | CombinedConditioning):
            raise ValueError(f"{where}: {name} must come from a text encoder node")
    if isinstance(latent, dict) and "noise_mask" in latent:
        raise ValueError(f"{where}: latents with a noise_mask (inpainting) are not supported yet")
    samples = fix_empty_latent(latent_samples(latent, where), where)
    latent = with_samples(latent, samples)
    start = noise.generate(samples, latent.get("batch_index"))
    samplers.get_sampler(sampler)  # an unknown name fails before the transformer loads
    ctx.check_interrupt()
    with torch.no_grad(), ctx.models.use(guider.model.transformer) as loaded:
        model_sampling = model_sampling_of(loaded.module, guider.model)
        schedule = sigmas(model_sampling) if callable(sigmas) else sigmas
        if schedule is None or len(schedule) == 0:
            return latent, latent
        flow = samplers.FlowModel(_guided(loaded, guider, samples.shape[0], model_sampling), model_sampling)
        total, last = len(schedule) - 1, {}

        def on_step(info: dict) -> None:
            last["denoised"] = info["denoised"]
            # The denoised estimate is the live preview, as in ComfyUI (the model's latent space).
            ctx.progress(info["i"] + 1, total, info["denoised"])

        out = samplers.sample_latent(
            flow,
            sampler,
            schedule,
            start,
            samples,
            seed=noise.seed,
            callback=on_step,
            device=loaded.device,
            **(options or {}),
        )
    output = with_samples(latent, out.cpu())
    if "denoised" not in last:
        return output, output
    return output, with_samples(latent, ms.latent_out(last["denoised"].float()).cpu())


# --- KSampler and KSamplerAdvanced ----------------------------------------------------------


def _sampler_inputs() -> list[Input]:
    return [
        Input("steps", Int(default=20, min=1, max=10000), tooltip="denoising steps"),
        Input(
            "cfg",
            Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            tooltip="classifier-free guidance with the negative; FLUX workflows use 1 (negative ignored)",
        ),
        Input("sampler_name", Combo(SAMPLER_NAMES)),
        Input("scheduler", Combo(SCHEDULER_NAMES)),
        Input("positive", Socket(CONDITIONING)),
        Input("negative", Socket(CONDITIONING)),
        Input("latent_image", Socket(LATENT)),
    ]


SEED = Int(default=0, min=0, max=MAX_SEED, control_after_generate=True)


@node(
    "KSampler",
    category="sampling",
    display_name="KSampler",
    description="Uses the provided model, positive and negative conditioning to denoise the latent image.",
    inputs=[
        Input("model", Socket(MODEL)),
        Input("seed", SEED, tooltip="The random seed used for creating the noise."),
        *_sampler_inputs(),
        Input(
            "denoise",
            Float(default=1.0, min=0.0, max=1.0, step=0.01),
            tooltip="below 1 keeps the structure of the input latent (image-to-image)",
        ),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def ksampler(
    ctx: NodeContext,
    model,
    seed,
    steps,
    cfg,
    sampler_name,
    scheduler,
    positive,
    negative,
    latent_image,
    denoise,
) -> tuple[dict]:
    def schedule(model_sampling):
        return sc.ksampler_sigmas(model_sampling, scheduler, steps, denoise, sampler_name)

    guider = Guider(model, positive, negative, cfg)
    out, _ = run_sampling(ctx, "KSampler", guider, sampler_name, schedule, Noise(seed), latent_image)
    return (out,)


@node(
    "KSamplerAdvanced",
    category="sampling",
    display_name="KSampler (Advanced)",
    description=(
        "KSampler over a range of the schedule's steps: split one run over several samplers "
        "(return_with_leftover_noise on the first, add_noise disabled on the next)."
    ),
    inputs=[
        Input("model", Socket(MODEL)),
        Input("add_noise", Combo(("enable", "disable"))),
        Input("noise_seed", SEED),
        *_sampler_inputs(),
        Input("start_at_step", Int(default=0, min=0, max=10000)),
        Input("end_at_step", Int(default=10000, min=0, max=10000)),
        Input("return_with_leftover_noise", Combo(("disable", "enable"))),
    ],
    outputs=[Output(LATENT, "LATENT")],
)
def ksampler_advanced(
    ctx: NodeContext,
    model,
    add_noise,
    noise_seed,
    steps,
    cfg,
    sampler_name,
    scheduler,
    positive,
    negative,
    latent_image,
    start_at_step,
    end_at_step,
    return_with_leftover_noise,
) -> tuple[dict]:
    full_denoise = return_with_leftover_noise != "enable"

    def schedule(model_sampling):
        sigmas = sc.ksampler_sigmas(model_sampling, scheduler, steps, 1.0, sampler_name)
        return sc.advanced_sigmas(sigmas, start_at_step, end_at_step, full_denoise)

    guider = Guider(model, positive, negative, cfg)
    noise = Noise(noise_seed, add=add_noise != "disable")
    out, _ = run_sampling(ctx, "KSamplerAdvanced", guider, sampler_name, schedule, noise, latent_image)
    return (out,)
