"""ModelHandle: what FLUX loader nodes output. It names one part of one model and how to load
it, and holds no weights: the model manager loads it when a consumer node first uses it, and
keeps loaded models by handle (so equal handles share one loaded model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelHandle:
    kind: str  # "CLIP" | "T5" | "FLUX_MODEL" | "VAE"
    source: str  # name shown in the combo, e.g. "fluxloom-demo"
    path: str  # folder of the diffusers pipeline
    quantization: str  # "none" or one of nodes.flux.quantization.CHOICES
    dtype: str  # "auto" | "bf16" | "fp16" | "fp32"

    @property
    def name(self) -> str:
        q = "" if self.quantization == "none" else f", {self.quantization}"
        return f"{self.source}/{self.kind} ({self.dtype}{q})"

    def describe(self) -> dict[str, Any]:
        """What the model manager's stats say about a loaded model besides its size."""
        return {"source": self.source, "quantization": self.quantization}

    def cache_size(self) -> int:
        return 256  # the executor's OutputCache: a handle keeps no weights alive
