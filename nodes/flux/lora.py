"""Applying FLUX LoRAs (read by lora_formats, any layout) to a loaded FluxTransformer2DModel.

Per layer, by what the layer is:
- a plain nn.Linear with an ordinary float weight: the LoRAs are merged into the weight,
  `W = (W.float() + sum(strength * scale * up @ down)).to(W.dtype)`, all LoRAs of one call summed
  in fp32 and rounded once. The model runs exactly as fast as without a LoRA.
- anything else with `in_features`/`out_features` and a forward (bitsandbytes Linear8bitLt and
  Linear4bit, torchao's int8 weight-only Linear, diffusers' GGUFLinear, fp8 Linears that cast at
  compute): the layer is wrapped in `LoraLinear`, which adds an unmerged branch,
  `y = base(x) + up'(down(x))` with up' = the strength x scale-weighted ups. The quantized weight is
  never touched: merging would mean dequantizing and requantizing each layer, which adds a second
  rounding of the whole weight to the LoRA's small delta and changes what "int8"/"Q8_0" means.
  The branch costs 2 x rank x (in + out) multiply-adds per token per layer (about 1% of a
  3072-wide FLUX layer at rank 16) and its weights in compute dtype.

`apply_loras` mutates the module it is given: a LoRA'd model is its own model (base + [(file,
strength)]), loaded as the base and then patched; going back to the base means loading the base
again, never un-patching (a merge in bf16 cannot be undone bit for bit). `lora_fingerprint` keys
such a model in caches.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nodes.flux.lora_formats import FluxLora, LoraError, LoraPiece, read_lora

log = logging.getLogger("fluxloom.models")


@dataclass(frozen=True)
class LoraReport:
    """What apply_loras did: layers merged into plain weights, layers given a branch."""

    merged: int
    branched: int
    files: tuple[str, ...]


class LoraLinear(torch.nn.Module):
    """A layer plus an unmerged LoRA branch: `base(x) + F.linear(F.linear(x, down), up)`.

    All LoRAs on the layer share one branch: their downs are stacked and their ups (already
    weighted by strength x scale) set side by side, so two matmuls serve any number of LoRAs.
    The branch tensors are buffers, so they move with the model (`.to(device)`) and count in its
    size."""

    def __init__(self, base: torch.nn.Module, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.base = base
        self.in_features = base.in_features
        self.out_features = base.out_features
        device = _device_of(base)
        self.register_buffer(
            "lora_down", torch.zeros(0, self.in_features, dtype=compute_dtype, device=device)
        )
        self.register_buffer("lora_up", torch.zeros(self.out_features, 0, dtype=compute_dtype, device=device))

    @property
    def weight(self):  # code that asks a Linear for its weight (dtype, device) gets the base's
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def add(self, down: torch.Tensor, up: torch.Tensor, factor: float) -> None:
        """Add a branch `factor * up @ down` (factor = strength x scale, folded into up in fp32)."""
        dtype, device = self.lora_down.dtype, self.lora_down.device
        weighted_up = (up.float() * factor).to(device=device, dtype=dtype)
        self.lora_down = torch.cat([self.lora_down, down.to(device=device, dtype=dtype)])
        self.lora_up = torch.cat([self.lora_up, weighted_up], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = torch.nn.functional.linear(x.to(self.lora_down.dtype), self.lora_down)
        return out + torch.nn.functional.linear(h, self.lora_up).to(out.dtype)

    def extra_repr(self) -> str:
        return f"lora_rank={self.lora_down.shape[0]}"


def apply_loras(
    transformer: torch.nn.Module, loras: Sequence[tuple[Path, float]], compute_dtype: torch.dtype
) -> LoraReport:
    """Apply each (LoRA file, strength) to `transformer`, in place. Strength 0 leaves the model
    exactly as it was (the file is still read and checked). Raises LoraError naming the file and
    the first layer that does not fit, before changing anything."""
    read = [(read_lora(path), float(strength)) for path, strength in loras]
    for lora, _ in read:
        check_fits(lora, transformer)
    by_layer: dict[str, list[tuple[LoraPiece, float]]] = {}
    for lora, strength in read:
        if strength == 0.0:
            continue
        for name, piece in lora.layers.items():
            by_layer.setdefault(name, []).append((piece, strength))
    merged = branched = 0
    for name, pieces in by_layer.items():
        layer = transformer.get_submodule(name)
        if _mergeable(layer):
            _merge(layer, pieces)
            merged += 1
        else:
            _branch(transformer, name, layer, pieces, compute_dtype)
            branched += 1
    report = LoraReport(merged, branched, tuple(lora.path.name for lora, _ in read))
    log.info("LoRAs %s: %d layers merged, %d given a LoRA branch", ", ".join(report.files), merged, branched)
    return report


def check_fits(lora: FluxLora, transformer: torch.nn.Module) -> None:
    """Every piece's layer exists and is a Linear of the piece's shape; else a LoraError that
    names the file and the first layer that does not fit (in the model's order; a layer the
    model lacks comes first)."""
    order = {name: i for i, (name, _) in enumerate(transformer.named_modules())}
    for name in sorted(lora.layers, key=lambda n: order.get(n, -1)):
        piece = lora.layers[name]
        try:
            layer = transformer.get_submodule(name)
        except AttributeError:
            raise LoraError(
                f"LoRA {lora.path.name} ({lora.layout} layout) is not for this model: it has a layer "
                f"{name!r}, which this FLUX transformer lacks (a LoRA for a larger model, or not for FLUX?)"
            ) from None
        if isinstance(layer, LoraLinear):
            layer = layer.base
        shape = (getattr(layer, "out_features", None), getattr(layer, "in_features", None))
        if None in shape:
            raise LoraError(f"LoRA {lora.path.name}: its layer {name!r} is not a Linear layer in this model")
        if piece.up.shape[1] != piece.rank or (piece.up.shape[0], piece.down.shape[1]) != shape:
            raise LoraError(
                f"LoRA {lora.path.name} ({lora.layout} layout) does not fit this model: layer {name!r} "
                f"is {shape[1]} -> {shape[0]}, the LoRA's is {piece.down.shape[1]} -> {piece.up.shape[0]} "
                f"(up {tuple(piece.up.shape)}, down {tuple(piece.down.shape)}); a LoRA for another "
                "FLUX size?"
            )


def check_lora_for_config(path: Path, transformer_config: dict) -> FluxLora:
    """Read a LoRA file and check it against a FluxTransformer2DModel config (a config.json's
    contents), without loading the model: its layers are built empty (no memory) to compare
    shapes. For a loader node to fail at once, naming itself, on a LoRA for another model."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    lora = read_lora(path)
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(transformer_config)
    check_fits(lora, model)
    return lora


def _mergeable(layer: torch.nn.Module) -> bool:
    """A plain nn.Linear whose weight is an ordinary float tensor (not a quantized tensor
    subclass such as torchao's, not fp8)."""
    if type(layer) is not torch.nn.Linear:
        return False
    weight = layer.weight
    return type(weight.data) is torch.Tensor and weight.dtype in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
    )


def _merge(layer: torch.nn.Linear, pieces: list[tuple[LoraPiece, float]]) -> None:
    weight = layer.weight
    delta = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    for piece, strength in pieces:
        down = piece.down.to(device=weight.device, dtype=torch.float32)
        up = piece.up.to(device=weight.device, dtype=torch.float32)
        delta += (strength * piece.scale) * (up @ down)
    with torch.no_grad():
        weight.copy_((weight.float() + delta).to(weight.dtype))


def _branch(
    root: torch.nn.Module,
    name: str,
    layer: torch.nn.Module,
    pieces: list[tuple[LoraPiece, float]],
    compute_dtype: torch.dtype,
) -> None:
    if not isinstance(layer, LoraLinear):
        wrapped = LoraLinear(layer, compute_dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, wrapped)
        layer = wrapped
    for piece, strength in pieces:
        layer.add(piece.down, piece.up, strength * piece.scale)


def _device_of(module: torch.nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def lora_fingerprint(path: Path) -> str:
    """A key for a LoRA file in model handles and caches: size, modification time and a hash of
    the safetensors header (names, shapes, dtypes, offsets), without reading the weights."""
    path = Path(path)
    stat = path.stat()
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        header = fh.read(min(n, stat.st_size))
    digest = hashlib.blake2b(head + header, digest_size=16).hexdigest()
    return f"{stat.st_size}-{stat.st_mtime_ns}-{digest}"
