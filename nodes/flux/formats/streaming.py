"""Loading a converted single file into a diffusers model one tensor at a time.

The model is built on the meta device from the config read off the tensors; each tensor is then
read, converted (a `Piece` of the plan), cast and put in place, so that at no time does a
full-precision copy of the whole model exist. Linear weights become, in order of precedence:
- a GGUF-quantized weight → diffusers' GGUFLinear (stays quantized, whatever the choice);
- an fp8 weight with quantization "none" → Fp8Linear (stays 8-bit, cast per layer at compute);
- otherwise the real weight in the compute dtype (fp8 upcast with its scale first), quantized
  with the chosen backend by quantization.quantized_linear (which runs on the CPU and on CUDA),
  or a plain nn.Linear parameter for "none" — exactly what diffusers' from_pretrained gives.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from nodes.flux import quantization as q
from nodes.flux.formats import fp8
from nodes.flux.formats.checkpoint_split import FormatError
from nodes.flux.formats.gguf_transformer import dequantize, gguf_linear, is_gguf_tensor

log = logging.getLogger("fluxloom.models")

DTYPE_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FLOAT_NAMES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
FP8_NAMES = ("F8_E4M3", "F8_E5M2")


@dataclass(frozen=True)
class Piece:
    """One diffusers tensor: `source`'s rows [start, stop), or its two halves swapped
    (BFL's final modulation is (shift, scale); diffusers' is (scale, shift)), or a 1x1
    convolution's weight as a Linear's (the VAE's attention)."""

    target: str
    source: str
    rows: tuple[int, int] | None = None
    swap_halves: bool = False
    flatten: bool = False

    def take(self, t: torch.Tensor) -> torch.Tensor:
        if self.flatten and t.ndim > 2:
            return t.reshape(t.shape[0], t.shape[1])
        if self.rows is not None:
            return t[self.rows[0] : self.rows[1]]
        if self.swap_halves:
            first, second = t.chunk(2, dim=0)
            return torch.cat([second, first], dim=0)
        return t


@dataclass
class StreamReport:
    """What streaming did, for the log: how many Linear layers became what."""

    layers: Counter = field(default_factory=Counter)

    def note(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.layers.items()))


def build_empty(model_cls: Any, config: dict[str, Any]) -> torch.nn.Module:
    with torch.device("meta"):
        return model_cls.from_config(config)


def resolve_dtype(choice: torch.dtype | str, source, device: torch.device) -> torch.dtype:
    """The compute dtype for a file: an explicit dtype or "bf16"/"fp16"/"fp32"; "auto" is bf16 on
    CUDA (fp16 where bf16 is not supported), and on the CPU the dtype most of the file's weights
    are stored in (so fp32 test weights stay exact), bf16 for fp8 and GGUF-quantized files."""
    if isinstance(choice, torch.dtype):
        return choice
    if choice in DTYPE_CHOICES:
        return DTYPE_CHOICES[choice]
    if choice != "auto":
        raise FormatError(f"unknown dtype {choice!r}; choose one of: auto, {', '.join(DTYPE_CHOICES)}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    weights: Counter = Counter()
    for key in source.keys():
        if len(source.shape(key)) >= 2:
            weights[source.stored_dtype(key)] += source.nbytes(key)
    main = weights.most_common(1)[0][0] if weights else "F32"
    return FLOAT_NAMES.get(main, torch.bfloat16)


def estimate_bytes(source, quantization: str, dtype: torch.dtype) -> int:
    """What the part will take once loaded with `quantization` at `dtype`: Linear weights (2-D
    `.weight`s) at 1 byte per value for int8, half for nf4, their stored size when GGUF-quantized
    or fp8 (quantization "none"); everything else at `dtype`."""
    per_value = q.BYTES_PER_WEIGHT.get(quantization)
    item = torch.empty((), dtype=dtype).element_size()
    total = 0.0
    for key in source.keys():
        if fp8.is_scale_key(key):
            continue
        shape, stored = source.shape(key), source.stored_dtype(key)
        numel = 1
        for d in shape:
            numel *= d
        linear_weight = len(shape) == 2 and key.endswith(".weight")
        if linear_weight and stored not in FLOAT_NAMES and stored not in FP8_NAMES:
            total += source.nbytes(key)  # GGUF blocks stay as they are
        elif linear_weight and per_value is not None:
            total += numel * per_value
        elif linear_weight and stored in FP8_NAMES:
            total += numel
        else:
            total += numel * item
    return int(total)


def compute_tensor(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A non-Linear tensor (bias, norm, conv) with its real values in `dtype`."""
    if is_gguf_tensor(t):
        t = dequantize(t)
    return t.to(dtype) if t.is_floating_point() else t


def set_tensor(model: torch.nn.Module, key: str, value: torch.Tensor, where: str) -> None:
    """Put `value` in place of the (meta) parameter or buffer `key`, after checking its shape."""
    module_name, _, name = key.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError as exc:
        raise FormatError(f"{where}: tensor {key} has no place in the model") from exc
    current = module._parameters.get(name, module._buffers.get(name))
    if current is None:
        raise FormatError(f"{where}: tensor {key} has no place in the model")
    if tuple(current.shape) != tuple(value.shape):
        raise FormatError(
            f"{where}: tensor {key} has shape {tuple(value.shape)}, the model expects {tuple(current.shape)}"
        )
    if name in module._parameters:
        # A plain Parameter (requires_grad as from_pretrained leaves it): torch picks a different,
        # not bit-identical matmul path for batched inputs when weights do not require grad.
        module._parameters[name] = torch.nn.Parameter(value)
    else:
        module._buffers[name] = value


def make_linear(
    linear: torch.nn.Linear,
    weight: torch.Tensor,
    scale: torch.Tensor | None,
    quantization: str,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.nn.Module | None, str]:
    """The layer that replaces the meta `linear` (None: keep it, its weight now set), and what it is."""
    bias = None if linear.bias is None else linear.bias.data
    if is_gguf_tensor(weight):
        return gguf_linear(weight, bias, dtype, device), f"GGUF {weight.quant_type.name}"
    if fp8.is_fp8(weight.dtype) and quantization == q.NONE:
        kind = f"{str(weight.dtype).removeprefix('torch.')}{' scaled' if scale is not None else ''}"
        return fp8.fp8_linear(weight.to(device), scale, bias, dtype), kind
    value = fp8.upcast(weight, scale, dtype) if fp8.is_fp8(weight.dtype) else weight.to(dtype)
    if quantization != q.NONE:
        shape = (linear.in_features, linear.out_features)
        layer = q.quantized_linear(*shape, value, bias, quantization, dtype, device)
        if layer is not None:
            return layer, quantization
    linear._parameters["weight"] = torch.nn.Parameter(value.to(device))
    return None, str(dtype).removeprefix("torch.")


def stream_into(
    model: torch.nn.Module,
    source,
    plan: list[Piece],
    quantization: str,
    dtype: torch.dtype,
    device: torch.device,
) -> StreamReport:
    """Fill the meta-built `model` from `source` by `plan`: first every tensor that is not a
    Linear weight (small), then each Linear weight, one source tensor at a time."""
    where = str(source.path)
    keys = set(source.keys())
    linears = {n: m for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    weights: dict[str, list[Piece]] = {}
    others: dict[str, list[Piece]] = {}
    for piece in plan:
        module_name, _, name = piece.target.rpartition(".")
        group = weights if name == "weight" and module_name in linears else others
        group.setdefault(piece.source, []).append(piece)
    missing = sorted(s for s in (*weights, *others) if s not in keys)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FormatError(f"{where}: the model lacks {', '.join(missing[:5])}{more}; is the file complete?")
    report = StreamReport()
    with source:
        for key, pieces in others.items():
            tensor = source.read(key)
            for piece in pieces:
                set_tensor(model, piece.target, compute_tensor(piece.take(tensor), dtype).to(device), where)
        for key, pieces in weights.items():
            tensor = source.read(key)
            scale_key = fp8.scale_key(key)
            scale = source.read(scale_key) if scale_key in keys else None
            for piece in pieces:
                module_name = piece.target.rpartition(".")[0]
                layer = linears[module_name]
                value = piece.take(tensor)
                _check_linear(layer, value, piece, where)
                new, kind = make_linear(layer, value, scale, quantization, dtype, device)
                if new is not None:
                    _replace(model, module_name, layer, new)
                report.layers[kind] += 1
            del tensor
            release_freed_memory()
    unused = keys - {p.source for p in plan} - {k for k in keys if fp8.is_scale_key(k)}
    if unused:
        log.warning(
            "%s: %d tensors have no place in the model and were skipped: %s",
            where,
            len(unused),
            sorted(unused)[:5],
        )
    check_complete(model, where)
    return report


def release_freed_memory() -> None:
    """Give the pages of freed temporaries back to the OS (glibc's malloc_trim). glibc raises its
    mmap threshold after a large buffer is freed, so each layer's full-precision temporary comes
    from the heap, and the quantized layers allocated between them fragment it: without this the
    peak RSS of an int8 load is about the full-precision model's (measured: 820 MiB for a 303 MiB
    int8 model from a 603 MiB bf16 file; 350 MiB with it)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def _check_linear(layer: torch.nn.Linear, value: torch.Tensor, piece: Piece, where: str) -> None:
    shape = tuple(value.quant_shape) if is_gguf_tensor(value) else tuple(value.shape)
    if shape != (layer.out_features, layer.in_features):
        raise FormatError(
            f"{where}: tensor {piece.source} gives {piece.target} the shape {shape}, the model expects "
            f"{(layer.out_features, layer.in_features)}"
        )


def _replace(root: torch.nn.Module, dotted: str, old: torch.nn.Module, new: torch.nn.Module) -> None:
    for attr, value in vars(old).items():  # e.g. diffusers' tensor-parallel hints on proj_out
        if attr.startswith("_tp_"):
            setattr(new, attr, value)
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def check_complete(model: torch.nn.Module, where: str) -> None:
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FormatError(f"{where}: no values for {', '.join(missing[:5])}{more}; is the file complete?")
