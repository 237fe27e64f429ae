"""ComfyUI's FLUX conditioning nodes: CLIPTextEncode, CLIPTextEncodeFlux, FluxGuidance,
ConditioningZeroOut. They make and change the same CONDITIONING value as fluxloom's EncodePrompt
(`nodes.flux.encode.Conditioning`), so either vocabulary's sampler takes either's conditioning.

Encoding follows ComfyUI's FLUX text encoders (comfy/text_encoders/flux.py and comfy/sd1_clip.py,
read at a125cd8), which differ from diffusers' FluxPipeline in the T5 half:
- CLIP-L: start token, the prompt, the end token, padded with the end token to 77; the pooled
  output is the final hidden state at the first end token (what transformers' CLIPTextModel
  returns as `pooler_output`). Same as FluxPipeline, so EncodePrompt's helper does it.
- T5-XXL: the prompt's tokens and `</s>`, padded with `<pad>` to *at least* 256 tokens and never
  truncated (FluxPipeline pads and truncates to max_sequence_length), with no attention mask.
- ComfyUI's prompt weighting, `(word:1.2)`, for both (prompt_weights.py).
The two encoders run one after the other through the model manager, so one of them is on the
device at a time, and the embeddings are kept on the CPU.
"""

from __future__ import annotations

import dataclasses

import torch

from nodes.base import Float, Input, NodeContext, Output, Socket, String, node
from nodes.comfy import prompt_weights as weights
from nodes.comfy.types import CLIP
from nodes.comfy.values import CombinedConditioning, TextEncoders
from nodes.flux import math as fm
from nodes.flux.encode import Conditioning, clip_pooled_ids, t5_hidden_states
from nodes.flux.types import CONDITIONING

T5_MIN_TOKENS = 256  # ComfyUI's FLUX T5 tokenizer: min_length=256, no maximum

# FluxGuidance and CLIPTextEncodeFlux: FLUX.1-dev's distilled guidance.
GUIDANCE = Float(default=3.5, min=0.0, max=100.0, step=0.1)


def encoders_of(clip, where: str) -> TextEncoders:
    """The CLIP value's two encoders, or an error that says which one is missing."""
    if not isinstance(clip, TextEncoders):
        raise ValueError(
            f"{where}: clip must come from a CLIP loader (DualCLIPLoader, CheckpointLoaderSimple)"
        )
    missing = [name for name, handle in (("CLIP-L", clip.clip_l), ("T5-XXL", clip.t5)) if handle is None]
    if missing:
        raise ValueError(
            f"{where}: FLUX needs CLIP-L and T5-XXL, and this CLIP has no {' or '.join(missing)}; "
            "load both with DualCLIPLoader (type flux)"
        )
    return clip


def encode_flux(models, clip: TextEncoders, clip_l_text: str, t5_text: str, guidance=None) -> Conditioning:
    """CLIP-L's pooled vector of one text and T5's per-token embeddings of another, as ComfyUI's
    FLUX text encoder makes them, prompt weights included (CLIP-L first, then T5; each on the
    device only while it runs)."""
    with torch.no_grad():
        with models.use(clip.clip_l) as loaded:
            pooled = clip_pooled_ids(loaded, weights.clip_first_window(loaded.tokenizer, clip_l_text)).cpu()
            clip_dtype = loaded.module.dtype
        with models.use(clip.t5) as loaded:
            embeds = t5_weighted(loaded, t5_text).cpu()
    return Conditioning(embeds, pooled, fm.text_ids(embeds.shape[1], "cpu", clip_dtype), guidance)


def t5_weighted(loaded, text: str) -> torch.Tensor:
    """T5's embeddings [1, L, D] of a prompt, its `(word:weight)`s applied as ComfyUI applies them."""
    ids, token_weights = weights.t5_tokens(loaded.tokenizer, text, T5_MIN_TOKENS)
    embeds = t5_hidden_states(loaded, ids)
    if bool((token_weights == 1.0).all()):
        return embeds
    empty = t5_hidden_states(loaded, weights.t5_empty_tokens(loaded.tokenizer, ids.shape[1]))
    return weights.apply_weights(embeds, empty, token_weights)


@node(
    "CLIPTextEncode",
    category="conditioning",
    display_name="CLIP Text Encode (Prompt)",
    description=(
        "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the "
        "diffusion model towards generating specific images."
    ),
    inputs=[
        Input("text", String(multiline=True), tooltip="The text to be encoded."),
        Input("clip", Socket(CLIP), tooltip="The CLIP model used for encoding the text."),
    ],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def clip_text_encode(ctx: NodeContext, text: str, clip) -> tuple[Conditioning]:
    encoders = encoders_of(clip, "CLIPTextEncode")
    return (encode_flux(ctx.models, encoders, text, text),)


@node(
    "CLIPTextEncodeFlux",
    category="advanced/conditioning/flux",
    display_name="CLIPTextEncodeFlux",
    description="Encode one text with CLIP-L and another with T5-XXL, and set FLUX.1-dev's guidance.",
    inputs=[
        Input("clip", Socket(CLIP)),
        Input("clip_l", String(multiline=True)),
        Input("t5xxl", String(multiline=True)),
        Input("guidance", GUIDANCE),
    ],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def clip_text_encode_flux(
    ctx: NodeContext, clip, clip_l: str, t5xxl: str, guidance: float
) -> tuple[Conditioning]:
    encoders = encoders_of(clip, "CLIPTextEncodeFlux")
    return (encode_flux(ctx.models, encoders, clip_l, t5xxl, guidance),)


def check_conditioning(conditioning, where: str) -> Conditioning:
    if isinstance(conditioning, CombinedConditioning):
        raise ValueError(
            f"{where} takes one prompt, and this conditioning holds several (ConditioningCombine or "
            "ConditioningSetTimestepRange): use it before those nodes"
        )
    if not isinstance(conditioning, Conditioning):
        raise ValueError(f"{where}: conditioning must come from a text encoder node")
    return conditioning


def each_prompt(conditioning, where: str, change):
    """`change` applied to the conditioning's prompt, or to each of a combined one's (as ComfyUI
    applies FluxGuidance or ConditioningZeroOut to every entry)."""
    if isinstance(conditioning, CombinedConditioning):
        parts = tuple(
            dataclasses.replace(p, cond=change(check_conditioning(p.cond, where))) for p in conditioning.parts
        )
        return CombinedConditioning(parts)
    return change(check_conditioning(conditioning, where))


@node(
    "FluxGuidance",
    category="advanced/conditioning/flux",
    display_name="FluxGuidance",
    description="Set FLUX.1-dev's distilled guidance on a conditioning (models without it ignore it).",
    inputs=[Input("conditioning", Socket(CONDITIONING)), Input("guidance", GUIDANCE)],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def flux_guidance(ctx: NodeContext, conditioning, guidance: float) -> tuple[Conditioning]:
    return (
        each_prompt(conditioning, "FluxGuidance", lambda c: dataclasses.replace(c, guidance=float(guidance))),
    )


@node(
    "ConditioningZeroOut",
    category="advanced/conditioning",
    display_name="ConditioningZeroOut",
    description="Zeros in place of the embeddings and the pooled output (FLUX templates' negative).",
    inputs=[Input("conditioning", Socket(CONDITIONING))],
    outputs=[Output(CONDITIONING, "CONDITIONING")],
)
def conditioning_zero_out(ctx: NodeContext, conditioning) -> tuple[Conditioning]:
    def zeroed(cond: Conditioning) -> Conditioning:
        return dataclasses.replace(
            cond,
            prompt_embeds=torch.zeros_like(cond.prompt_embeds),
            pooled_prompt_embeds=torch.zeros_like(cond.pooled_prompt_embeds),
        )

    return (each_prompt(conditioning, "ConditioningZeroOut", zeroed),)
