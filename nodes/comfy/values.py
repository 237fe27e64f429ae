"""The Python values that travel on ComfyUI's socket types in fluxloom (nodes/comfy/types.py).

fluxloom runs ComfyUI's FLUX workflows on its own model manager: a ComfyUI MODEL or CLIP is not
a loaded model but a handle bundle, loaded through `ctx.models.use(...)` when a sampler or an
encoder needs it, exactly as fluxloom's own nodes do (so the two-phase memory flow, quantization
and LoRAs work the same in both vocabularies). VAE, CONDITIONING, LATENT and IMAGE are the values
fluxloom's own nodes use (nodes/flux/types.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nodes.flux.handles import ModelHandle


@dataclass(frozen=True)
class DiffusionModel:
    """MODEL: a FLUX transformer and how it is sampled. `shift` is ModelSamplingFlux's mu when a
    node set it (None: the model's default, 1.15 for dev, the discrete-flow table for schnell)."""

    transformer: ModelHandle
    shift: float | None = None

    def with_shift(self, shift: float) -> DiffusionModel:
        return replace(self, shift=shift)

    def with_transformer(self, transformer: ModelHandle) -> DiffusionModel:
        return replace(self, transformer=transformer)

    def cache_size(self) -> int:
        return 256  # a handle bundle: no weights


@dataclass(frozen=True)
class TextEncoders:
    """CLIP (ComfyUI's): the text encoders of a FLUX model. FLUX's CLIPTextEncode uses CLIP-L for
    the pooled vector and T5-XXL for the per-token embeddings; either may be missing when a
    CLIPLoader loaded only one (the encoder then says what is missing)."""

    clip_l: ModelHandle | None = None
    t5: ModelHandle | None = None

    def cache_size(self) -> int:
        return 512
