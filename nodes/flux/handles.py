"""ModelHandle: what FLUX loader nodes output. It names one part of one model and how to load
it, and holds no weights: the model manager loads it when a consumer node first uses it, and
keeps loaded models by handle (so equal handles share one loaded model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelHandle:
    kind: str  # "CLIP" | "T5" | "FLUX_MODEL" | "VAE"
    source: str  # name shown in the combo, e.g. "fluxloom-demo" or "flux1-dev.safetensors"
    path: str  # a diffusers pipeline folder, or a single file (nodes/flux/formats)
    quantization: str  # "none" or one of nodes.flux.quantization.CHOICES
    dtype: str  # "auto" | "bf16" | "fp16" | "fp32"
    # LoRAs applied to a transformer, in order: (file, strength, fingerprint of the file). A
    # different LoRA, strength or file content is a different handle, so a different model for
    # the manager and a different key for the cache; no LoRA gives back the plain model.
    loras: tuple[tuple[str, float, str], ...] = ()

    @property
    def name(self) -> str:
        q = "" if self.quantization == "none" else f", {self.quantization}"
        loras = "".join(f" + {Path(f).stem}@{s:g}" for f, s, _ in self.loras)
        return f"{self.source}/{self.kind} ({self.dtype}{q}){loras}"

    @property
    def is_file(self) -> bool:
        return Path(self.path).is_file()

    def describe(self) -> dict[str, Any]:
        """What the model manager's stats say about a loaded model besides its size."""
        info: dict[str, Any] = {"source": self.source, "quantization": self.quantization}
        if self.loras:
            info["loras"] = [{"file": Path(f).name, "strength": s} for f, s, _ in self.loras]
        return info

    def cache_size(self) -> int:
        return 256  # the executor's OutputCache: a handle keeps no weights alive
