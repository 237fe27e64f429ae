"""8-bit float weights (float8_e4m3fn, float8_e5m2), plain or scaled, kept 8-bit in memory.

ComfyUI's fp8 files store Linear weights as fp8: half the memory of bf16. A *scaled* fp8 file
(marked by a `scaled_fp8` key) also stores, for each such Linear `X`, a per-tensor `X.scale_weight`
(fp32): the real weight is `fp8 * scale`, which lets the 8 bits cover each tensor's own range.
`Fp8Linear` keeps the weight as stored and casts it per layer at compute time, as ComfyUI does:
`weight.to(dtype) * scale.to(dtype)`. That needs nothing but torch, so it runs on the CPU and on
CUDA alike. (ComfyUI's optional `scale_input` keys only matter for fp8 matrix multiplication on
recent GPUs, which fluxloom does not do; they are ignored.)

`fp8_linear` and `is_fp8` are the interface other loaders (fp8 T5 files) use; `upcast` gives the
real weight for quantization choices other than none (fp8 → compute dtype → int8/nf4).
"""

from __future__ import annotations

import torch

FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALED_MARKER = "scaled_fp8"  # the key that marks a scaled fp8 file (an empty or 2-value tensor)
SCALE_SUFFIXES = (".scale_weight", ".scale_input")


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8


def upcast(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """The real weight of a (scaled) fp8 tensor in `dtype`, computed as Fp8Linear computes it."""
    w = weight.to(dtype)
    if scale is not None:
        w = w * scale.to(device=w.device, dtype=dtype)
    return w


class Fp8Linear(torch.nn.Module):
    """A Linear layer whose weight stays fp8; cast (and scaled) to the input's dtype per call."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        scale: torch.Tensor | None,
        compute_dtype: torch.dtype,
    ) -> None:
        super().__init__()
        if not is_fp8(weight.dtype):
            raise TypeError(f"Fp8Linear needs a float8 weight, not {weight.dtype}")
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = compute_dtype
        # The fp8 weight is a buffer, not a parameter: diffusers' `model.dtype` is the dtype of the
        # first floating *parameter*, and must stay the compute dtype (a bias, a norm). Buffers
        # move with .to(device) and are counted by the model manager as parameters are.
        self.register_buffer("weight", weight)
        self.bias = None if bias is None else torch.nn.Parameter(bias.to(compute_dtype), requires_grad=False)
        self.register_buffer("scale_weight", None if scale is None else scale.reshape(()).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = upcast(self.weight, self.scale_weight, x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, w, bias)

    def extra_repr(self) -> str:
        scaled = ", scaled" if self.scale_weight is not None else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"weight={str(self.weight.dtype).removeprefix('torch.')}{scaled}, "
            f"compute={str(self.compute_dtype).removeprefix('torch.')}"
        )


def fp8_linear(
    weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None, compute_dtype: torch.dtype
) -> torch.nn.Module:
    """A Linear layer for an fp8 `weight` ([out, in], on the device it should live on), with the
    per-tensor `scale` of a scaled fp8 file (or None) and an optional bias."""
    return Fp8Linear(weight, bias, scale, compute_dtype)


def is_scaled(keys) -> bool:
    """Whether a file's keys (its part's keys, prefix removed) mark it as scaled fp8."""
    return SCALED_MARKER in keys or any(k.endswith(".scale_weight") for k in keys)


def is_scale_key(key: str) -> bool:
    return key == SCALED_MARKER or key.endswith(SCALE_SUFFIXES)


def scale_key(weight_key: str) -> str:
    """`X.weight` → `X.scale_weight`."""
    return weight_key.removesuffix(".weight") + ".scale_weight"
