"""EncodePrompt: CLIP-L's pooled prompt and T5-XXL's per-token prompt, as FluxPipeline encodes them.

The two encoders are used one after the other, so the model manager can keep just one of them on
the device at a time. The embeddings are kept on the CPU: they are small, and the encoders (and
their device memory) may be gone by the time the sampler needs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from nodes.base import Input, Int, NodeContext, Output, Socket, String, node
from nodes.flux import math as fm
from nodes.flux.types import CLIP_L, CONDITIONING, T5

log = logging.getLogger("fluxloom.flux")


@dataclass(frozen=True)
class Conditioning:
    """The CONDITIONING value: what the transformer is told about the prompt."""

    prompt_embeds: torch.Tensor  # [B, L, joint_attention_dim] from T5, in T5's dtype
    pooled_prompt_embeds: torch.Tensor  # [B, pooled_projection_dim] from CLIP, in CLIP's dtype
    text_ids: torch.Tensor  # [L, 3] zeros, in CLIP's dtype (as diffusers makes them)
    # FLUX.1-dev's distilled guidance set on the conditioning (ComfyUI's FluxGuidance,
    # CLIPTextEncodeFlux); None: the sampler's own (KSampler: 3.5, FluxSampler: its widget).
    guidance: float | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt_embeds.dtype

    def cache_size(self) -> int:
        tensors = (self.prompt_embeds, self.pooled_prompt_embeds, self.text_ids)
        return sum(t.numel() * t.element_size() for t in tensors)

    def for_batch(self, batch: int, device: torch.device, dtype: torch.dtype | None = None) -> Conditioning:
        """On `device` (and in `dtype` when given), repeated to `batch` images (diffusers'
        num_images_per_prompt)."""
        embeds = self.prompt_embeds.to(device=device, dtype=dtype or self.prompt_embeds.dtype)
        pooled = self.pooled_prompt_embeds.to(device=device, dtype=dtype or self.pooled_prompt_embeds.dtype)
        if embeds.shape[0] != batch:
            if embeds.shape[0] != 1:
                raise ValueError(f"conditioning has batch {embeds.shape[0]}, the latent has {batch}")
            embeds = embeds.repeat(batch, 1, 1)
            pooled = pooled.repeat(batch, 1)
        return Conditioning(embeds, pooled, self.text_ids.to(device), self.guidance)


def _tokens(tokenizer, prompt: str, max_length: int, what: str) -> torch.Tensor:
    ids = tokenizer(
        [prompt],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_overflowing_tokens=False,
        return_length=False,
        return_tensors="pt",
    ).input_ids
    full = tokenizer([prompt], padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > ids.shape[-1]:
        log.warning("%s: the prompt was cut to %d tokens", what, max_length)
    return ids


def clip_pooled(loaded, prompt: str) -> torch.Tensor:
    """CLIP's pooled output [1, D] for a prompt padded/truncated to the tokenizer's 77 tokens."""
    return clip_pooled_ids(
        loaded, _tokens(loaded.tokenizer, prompt, loaded.tokenizer.model_max_length, "CLIP")
    )


def clip_pooled_ids(loaded, ids: torch.Tensor) -> torch.Tensor:
    """CLIP's pooled output [1, D] for token ids [1, 77], in CLIP's dtype."""
    out = loaded.module(ids.to(loaded.device), output_hidden_states=False)
    return out.pooler_output.to(dtype=loaded.module.dtype)


def t5_embeds(loaded, prompt: str, max_sequence_length: int) -> torch.Tensor:
    """T5's last hidden state [1, L, D] for a prompt padded/truncated to L tokens."""
    return t5_hidden_states(loaded, _tokens(loaded.tokenizer, prompt, max_sequence_length, "T5"))


def t5_hidden_states(loaded, ids: torch.Tensor) -> torch.Tensor:
    """T5's last hidden state [1, L, D] for token ids [1, L] (no attention mask, as FluxPipeline
    and ComfyUI both run it), in T5's dtype."""
    module = loaded.module
    out = module(ids.to(loaded.device), output_hidden_states=False)[0]
    return out.to(dtype=module.dtype)


def encode_prompt(models, clip, t5, prompt: str, prompt_2: str, max_sequence_length: int) -> Conditioning:
    """Encode with CLIP, then with T5 (each on the device only while it runs)."""
    with torch.no_grad():
        with models.use(clip) as loaded:
            pooled = clip_pooled(loaded, prompt).cpu()
            clip_dtype = loaded.module.dtype
        with models.use(t5) as loaded:
            embeds = t5_embeds(loaded, prompt_2 or prompt, max_sequence_length).cpu()
    return Conditioning(embeds, pooled, fm.text_ids(embeds.shape[1], "cpu", clip_dtype))


@node(
    "EncodePrompt",
    category="flux/conditioning",
    display_name="Encode Prompt",
    description="Encode a prompt with CLIP-L (pooled) and T5-XXL (per token), as FLUX.1 expects.",
    inputs=[
        Input("clip", Socket(CLIP_L)),
        Input("t5", Socket(T5)),
        Input("prompt", String(multiline=True), tooltip="what to draw (CLIP, and T5 when prompt_2 is empty)"),
        Input("prompt_2", String(multiline=True), tooltip="text for T5 only; empty = same as prompt"),
        Input(
            "max_sequence_length",
            Int(default=512, min=1, max=512),
            tooltip="T5 tokens; FLUX.1-dev was trained with 512, schnell with 256",
        ),
    ],
    outputs=[Output(CONDITIONING, "conditioning")],
)
def encode_prompt_node(
    ctx: NodeContext, clip, t5, prompt: str, prompt_2: str, max_sequence_length: int
) -> tuple[Conditioning]:
    models = ctx.models
    return (encode_prompt(models, clip, t5, prompt, prompt_2, max_sequence_length),)
