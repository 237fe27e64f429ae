"""FluxSampler: flow-matching Euler sampling of FLUX.1, text-to-image and image-to-image.

The loop is FluxPipeline's (FluxImg2ImgPipeline's when denoise < 1), written out with the pure
functions of nodes.flux.math so that the same weights, seed and settings give the same latents
bit for bit. Progress is reported after every step, which is also where an interrupt stops it;
with it goes a live preview: the step's denoised estimate, computed only if it is drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nodes.base import MAX_SEED, Float, Input, Int, NodeContext, Output, Socket, node
from nodes.flux import math as fm
from nodes.flux.encode import Conditioning
from nodes.flux.latent import VAEPosterior, check_latent
from nodes.flux.types import CONDITIONING, FLUX_MODEL, LATENT


@dataclass(frozen=True)
class SamplerSettings:
    seed: int
    steps: int
    guidance: float = 3.5
    true_cfg_scale: float = 1.0
    denoise: float = 1.0


@dataclass
class Start:
    """Where sampling starts: packed latents, the schedule, and the first step to run."""

    latents: torch.Tensor  # [B, (h/2)(w/2), 64]
    sigmas: torch.Tensor  # [steps + 1] float32, ending in 0
    first: int  # index of the first step run (0 for text-to-image)


def schedule(h: int, w: int, steps: int, shift: fm.ShiftConfig, device: torch.device) -> torch.Tensor:
    """The sigmas of a run on an h x w latent: the shift grows with the number of image tokens."""
    mu = fm.calculate_mu((h // 2) * (w // 2), shift)
    return fm.flux_sigmas(steps, mu, shift, device)


def text_to_image_start(shape, s: SamplerSettings, shift: fm.ShiftConfig, dtype, device) -> Start:
    """Pure noise from the seed, drawn in the conditioning's dtype (FluxPipeline.prepare_latents)."""
    noise = fm.draw_noise(tuple(shape), fm.seeded_generator(s.seed), dtype, device)
    return Start(fm.pack_latents(noise), schedule(shape[2], shape[3], s.steps, shift, device), 0)


def image_to_image_start(latent: dict, s: SamplerSettings, shift: fm.ShiftConfig, dtype, device) -> Start:
    """The input latent noised to the first kept sigma (FluxImg2ImgPipeline.prepare_latents):
    with one generator, first the VAE posterior sample (when the latent came from VAEEncode), then
    the noise."""
    samples = latent["samples"]
    b, c, h, w = samples.shape
    first = fm.img2img_start(s.steps, s.denoise)
    if s.steps - first < 1:
        raise ValueError(
            f"denoise {s.denoise} with {s.steps} steps leaves no step to run; raise denoise or steps"
        )
    generator = fm.seeded_generator(s.seed)
    posterior = latent.get("posterior")
    if isinstance(posterior, VAEPosterior):
        image_latents = posterior.sample(generator, device)
    else:  # raw latents from elsewhere (another sampler, an upscale): into the sampler's space
        image_latents = fm.encode_scale(samples.to(device=device, dtype=dtype))
    if image_latents.shape[0] != b:
        raise ValueError(f"the latent's posterior has batch {image_latents.shape[0]}, its samples {b}")
    noise = fm.draw_noise((b, c, h, w), generator, dtype, device)
    sigmas = schedule(h, w, s.steps, shift, device)
    start = fm.scale_noise(image_latents, noise, sigmas, first)
    return Start(fm.pack_latents(start), sigmas, first)


def predict(transformer, latents, t, guidance, cond: Conditioning, img_ids) -> torch.Tensor:
    return transformer(
        hidden_states=latents,
        timestep=fm.model_timestep(t, latents.shape[0], latents.dtype),
        guidance=guidance,
        pooled_projections=cond.pooled_prompt_embeds,
        encoder_hidden_states=cond.prompt_embeds,
        txt_ids=cond.text_ids,
        img_ids=img_ids,
        joint_attention_kwargs={},
        return_dict=False,
    )[0]


def denoised_estimate(
    latents: torch.Tensor, pred: torch.Tensor, sigma: torch.Tensor, h: int, w: int
) -> Callable[[], torch.Tensor]:
    """The clean latent the model predicts at this step, x - sigma * v, unpacked to [B, 16, h, w]
    (in the sampler's space), as a function: a preview computes it only for the steps it draws.
    The tensors are not changed in place later, so it may run after the loop has moved on."""
    return lambda: fm.unpack_latents(latents.float() - sigma.float() * pred.float(), h, w)


def check_fits(transformer: torch.nn.Module, channels: int, *conds: Conditioning | None) -> None:
    """The transformer takes these latents and this conditioning, or a clear error: a FLUX
    Fill/Depth/Canny transformer expects extra image channels, and encoders of another model give
    embeddings of another width (both otherwise fail deep inside a matmul)."""
    config = transformer.config
    if config.in_channels != channels * 4:
        raise ValueError(
            f"this transformer takes {config.in_channels} channels per latent token, not "
            f"{channels * 4}: it is not a FLUX.1 text-to-image model (a Fill, Depth or Canny "
            "variant?), which FluxSampler cannot drive"
        )
    for cond in conds:
        if cond is None:
            continue
        got = (cond.prompt_embeds.shape[-1], cond.pooled_prompt_embeds.shape[-1])
        want = (config.joint_attention_dim, config.pooled_projection_dim)
        if got != want:
            raise ValueError(
                f"the conditioning has T5/CLIP widths {got[0]}/{got[1]} but this transformer expects "
                f"{want[0]}/{want[1]}: load CLIP, T5 and the transformer from the same FLUX model"
            )


def sample(
    transformer: torch.nn.Module,
    *,
    # model input
    positive: Conditioning,
    negative: Conditioning | None = None,
    latent: dict,
    # sampling parameters
    settings: SamplerSettings,
    shift: fm.ShiftConfig,
    # where it runs
    device: torch.device,
    model_dtype: torch.dtype | None = None,
    on_step: Callable[[int, int, Callable[[], torch.Tensor]], None] = lambda i, n, preview: None,
) -> torch.Tensor:
    """Run the sampler on a LATENT's raw latents; returns unpacked latents [B, 16, h, w] on
    `device`, in the sampler's space (`fm.decode_scale` makes them raw again, as FluxPipeline does
    just before decoding).

    `shift` is the schedule's timestep-shift config (the scheduler's), not guidance:
    `settings.guidance` is FLUX.1-dev's distilled guidance and `settings.true_cfg_scale` real
    classifier-free guidance with `negative`. Noise is drawn in the conditioning's dtype, as
    diffusers does. When the transformer computes in another dtype (e.g. an fp32 T5 with a bf16
    transformer, which FluxPipeline refuses), the latents and embeddings are cast to it; when the
    dtypes agree nothing is cast. `on_step(step, total, preview)` follows each step; `preview()`
    gives that step's denoised estimate (see denoised_estimate)."""
    s = settings
    samples = latent["samples"]
    b, _, h, w = samples.shape
    dtype = positive.dtype
    model_dtype = model_dtype or dtype
    pos = positive.for_batch(b, device, model_dtype)
    use_neg = negative is not None and s.true_cfg_scale > 1
    check_fits(transformer, samples.shape[1], positive, negative if use_neg else None)
    neg = negative.for_batch(b, device, model_dtype) if use_neg else None
    if s.denoise < 1.0:
        start = image_to_image_start(latent, s, shift, dtype, device)
    else:
        start = text_to_image_start(samples.shape, s, shift, dtype, device)
    img_ids = fm.latent_image_ids(h, w, device, dtype)
    guidance = fm.guidance_vector(s.guidance, b, device) if transformer.config.guidance_embeds else None
    timesteps = fm.sigmas_to_timesteps(start.sigmas, shift)
    latents, sigmas, total = start.latents.to(model_dtype), start.sigmas, s.steps - start.first
    for n, i in enumerate(range(start.first, s.steps)):
        pred = predict(transformer, latents, timesteps[i], guidance, pos, img_ids)
        if neg is not None:
            pred = fm.true_cfg(
                pred, predict(transformer, latents, timesteps[i], guidance, neg, img_ids), s.true_cfg_scale
            )
        preview = denoised_estimate(latents, pred, sigmas[i], h, w)
        latents = fm.euler_step(latents, pred, sigmas[i], sigmas[i + 1])
        on_step(n + 1, total, preview)
    return fm.unpack_latents(latents, h, w)


@node(
    "FluxSampler",
    category="flux/sampling",
    display_name="FLUX Sampler",
    description=(
        "Denoise a latent with the FLUX transformer (flow-matching Euler, FLUX.1-dev's shifted "
        "schedule). denoise < 1 keeps part of the input latent (image-to-image)."
    ),
    inputs=[
        Input("model", Socket(FLUX_MODEL)),
        Input("positive", Socket(CONDITIONING)),
        Input("latent", Socket(LATENT)),
        Input("seed", Int(default=0, min=0, max=MAX_SEED, control_after_generate=True)),
        Input("steps", Int(default=20, min=1, max=10000), tooltip="dev: 20-50; schnell: 1-4"),
        Input(
            "guidance",
            Float(default=3.5, min=0.0, max=100.0, step=0.1),
            tooltip="FLUX.1-dev's distilled guidance; ignored by models without it (schnell)",
        ),
        Input(
            "true_cfg_scale",
            Float(default=1.0, min=0.0, max=100.0, step=0.1),
            tooltip="> 1 with a negative prompt: real classifier-free guidance (two passes per step)",
        ),
        Input("negative", Socket(CONDITIONING), optional=True),
        Input(
            "denoise",
            Float(default=1.0, min=0.0, max=1.0, step=0.01),
            tooltip="1: text-to-image from noise; < 1: keep that much less of the input latent",
        ),
    ],
    outputs=[Output(LATENT, "latent")],
)
def flux_sampler(
    ctx: NodeContext,
    model,
    positive: Conditioning,
    latent: dict,
    seed: int,
    steps: int,
    guidance: float,
    true_cfg_scale: float,
    denoise: float,
    negative: Conditioning | None = None,
) -> tuple[dict]:
    check_latent(latent, "FluxSampler")
    for name, cond in (("positive", positive), ("negative", negative)):
        if cond is not None and not isinstance(cond, Conditioning):
            raise ValueError(
                f"FluxSampler: {name} must be one prompt's conditioning (EncodePrompt, CLIPTextEncode); "
                "one that holds several (ConditioningCombine, ConditioningSetTimestepRange) needs "
                "KSampler or SamplerCustomAdvanced"
            )
    settings = SamplerSettings(seed, steps, guidance, true_cfg_scale, denoise)
    ctx.check_interrupt()
    with torch.no_grad(), ctx.models.use(model) as loaded:
        shift = fm.ShiftConfig.for_model(Path(model.path), loaded.module.config.guidance_embeds)
        out = sample(
            loaded.module,
            positive=positive,
            negative=negative,
            latent=latent,
            settings=settings,
            shift=shift,
            device=loaded.device,
            model_dtype=loaded.dtype,
            on_step=ctx.progress,
        )
        raw = fm.decode_scale(out)  # a LATENT holds raw VAE latents (ComfyUI's convention)
    return ({"samples": raw.cpu()},)
