"""The Python values that travel on ComfyUI's socket types in fluxloom (nodes/comfy/types.py).

fluxloom runs ComfyUI's FLUX workflows on its own model manager: a ComfyUI MODEL or CLIP is not
a loaded model but a handle bundle, loaded through `ctx.models.use(...)` when a sampler or an
encoder needs it, exactly as fluxloom's own nodes do (so the two-phase memory flow, quantization
and LoRAs work the same in both vocabularies). VAE, CONDITIONING, LATENT and IMAGE are the values
fluxloom's own nodes use (nodes/flux/types.py). NOISE, SAMPLER and GUIDER are small frozen
dataclasses of settings (no weights, no tensors but the conditioning a guider holds), so they are
cheap to cache and equal settings make equal values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from nodes.comfy import noise
from nodes.flux.encode import Conditioning
from nodes.flux.handles import ModelHandle


@dataclass(frozen=True)
class DiffusionModel:
    """MODEL: a FLUX transformer and how it is sampled. `shift` is ModelSamplingFlux's mu when a
    node set it (None: the model's default, 1.15 for dev, the discrete-flow table for schnell).
    `guidance_embeds` says whether the transformer is a dev (guidance-distilled) one when the
    loader knows it from the file (None: unknown; a node that needs it before sampling, such as
    BasicScheduler, then loads the transformer to read its config)."""

    transformer: ModelHandle
    shift: float | None = None
    guidance_embeds: bool | None = None

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


@dataclass(frozen=True)
class Noise:
    """NOISE: where sampling's starting noise comes from. RandomNoise: ComfyUI's seeded noise of the
    latent's shape; DisableNoise (`add=False`): zeros, and seed 0 for the samplers' extra noise,
    as ComfyUI's empty noise has."""

    seed: int = 0
    add: bool = True

    def generate(self, samples: torch.Tensor, batch_index=None) -> torch.Tensor:
        if not self.add:
            return noise.empty_noise(samples)
        return noise.prepare_noise(samples, self.seed, batch_index)

    def cache_size(self) -> int:
        return 64


@dataclass(frozen=True)
class Sampler:
    """SAMPLER: one of nodes.comfy.samplers' samplers, by ComfyUI's name, with the settings a
    Sampler… node gives it (eta, s_noise, ...; sorted (name, value) pairs, so equal settings
    make equal values)."""

    name: str
    options: tuple[tuple[str, float | int | str], ...] = ()

    @classmethod
    def of(cls, name: str, **options: float | int | str) -> Sampler:
        return cls(name, tuple(sorted(options.items())))

    def cache_size(self) -> int:
        return 64


@dataclass(frozen=True)
class Guider:
    """GUIDER: a model and the conditioning it is steered by. BasicGuider: the positive alone
    (cfg 1); CFGGuider: true classifier-free guidance with the negative when cfg is not 1."""

    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning | None = None
    cfg: float = 1.0

    def cache_size(self) -> int:
        conds = (self.positive, self.negative)
        return 256 + sum(c.cache_size() for c in conds if c is not None)


@dataclass(frozen=True)
class DualGuider(Guider):
    """GUIDER of DualCFGGuider: `positive` is cond1, `middle` cond2, `cfg` cfg_conds and `cfg2`
    cfg_cond2_negative; `nested` its style (nodes/comfy/guiders.py:dual_cfg_guider)."""

    middle: Conditioning | None = None
    cfg2: float = 1.0
    nested: bool = False

    def cache_size(self) -> int:
        return super().cache_size() + (self.middle.cache_size() if self.middle is not None else 0)


@dataclass(frozen=True)
class TimedConditioning:
    """One prompt of a CombinedConditioning and the part of sampling it is used in: from
    `start` to `end`, as fractions of the run (ComfyUI's start_percent / end_percent)."""

    cond: Conditioning
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class CombinedConditioning:
    """CONDITIONING made by ConditioningCombine or ConditioningSetTimestepRange: several prompts,
    each in its part of the run. At each step a ComfyUI sampler averages the predictions of the
    prompts whose part holds that step, as ComfyUI does (nodes/comfy/sampling.py)."""

    parts: tuple[TimedConditioning, ...]

    def cache_size(self) -> int:
        return sum(part.cond.cache_size() for part in self.parts)


def timed_parts(value) -> tuple[TimedConditioning, ...]:
    """A CONDITIONING as its timed prompts (a plain one: itself, for the whole run)."""
    if isinstance(value, CombinedConditioning):
        return value.parts
    return (TimedConditioning(value),)
