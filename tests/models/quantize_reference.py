"""The reference the streamed CPU quantization is compared with: load a model whole, then replace
its Linear layers with quantized ones (what fluxloom avoids doing, to keep the peak low)."""

from __future__ import annotations

import torch

from nodes.flux import quantization as q


def quantize_linears(
    module: torch.nn.Module, choice: str, compute_dtype: torch.dtype, device: torch.device
) -> tuple[int, int]:
    """Replace a loaded module's nn.Linear layers with quantized ones, in place, one layer at a
    time. Returns (layers quantized, layers kept as they were)."""
    if choice in q.BNB_CHOICES:
        q.require_package("bitsandbytes", choice)
    targets = [(name, m) for name, m in module.named_modules() if type(m) is torch.nn.Linear]
    done = kept = 0
    for name, linear in targets:
        bias = None if linear.bias is None else linear.bias.data
        layer = q.quantized_linear(
            linear.in_features, linear.out_features, linear.weight.data, bias, choice, compute_dtype, device
        )
        if layer is None:
            kept += 1
            continue
        q.set_submodule(module, name, layer)
        done += 1
    return done, kept
