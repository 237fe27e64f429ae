"""Weight quantization for the large FLUX parts (T5 and the transformer): the choices the loader
nodes offer, the library configs they map to, and a CPU path for bitsandbytes on the transformer.

What works where (bitsandbytes 0.50, torchao 0.18, diffusers 0.42, transformers 5.23):
- T5 through transformers: bitsandbytes int8 and nf4 load and run on CUDA and on the CPU
  (nf4 on the CPU needs every quantized layer's in-features to be a multiple of 64); torchao
  int8 weight-only runs on both.
- The transformer through diffusers: bitsandbytes (int8, nf4) needs CUDA, since diffusers'
  quantizer stops with "No GPU found" without one. On the CPU we load the transformer unquantized
  and swap its Linear layers for bitsandbytes' own Linear8bitLt / Linear4bit, which run there.
  torchao int8 weight-only works on both through diffusers' TorchAoConfig.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

log = logging.getLogger("fluxloom.models")

INT8_BNB = "int8 (bitsandbytes)"
NF4_BNB = "nf4 (bitsandbytes)"
INT8_TORCHAO = "int8 weight-only (torchao)"
NONE = "none"
CHOICES = (INT8_BNB, NF4_BNB, INT8_TORCHAO, NONE)
DEFAULT = INT8_BNB
BNB_CHOICES = (INT8_BNB, NF4_BNB)

# bitsandbytes' int8 matmul casts fp32/bf16 activations to fp16 (documented in docs/models.md)
# and says so on every call, through warnings or logging depending on the version.
warnings.filterwarnings("ignore", message=r"MatMul8bitLt: inputs will be cast")
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


class QuantizationError(RuntimeError):
    """A quantization choice cannot be used here; the message says why and what works instead."""


def check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise QuantizationError(f"unknown quantization {choice!r}; choose one of: {', '.join(CHOICES)}")


def require_package(module: str, choice: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise QuantizationError(
            f"quantization {choice!r} needs the Python package {module!r}, which is not installed "
            f"(pip install {module}); or choose 'none'"
        )


def _torchao_int8():
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def transformers_config(choice: str, compute_dtype: torch.dtype) -> Any | None:
    """quantization_config for a transformers model (T5): works on CUDA and the CPU."""
    check_choice(choice)
    if choice == NONE:
        return None
    if choice in BNB_CHOICES:
        require_package("bitsandbytes", choice)
        from transformers import BitsAndBytesConfig

        if choice == INT8_BNB:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
        )
    require_package("torchao", choice)
    from transformers import TorchAoConfig

    return TorchAoConfig(_torchao_int8())


def diffusers_config(choice: str, compute_dtype: torch.dtype, device: torch.device) -> Any | None:
    """quantization_config for a diffusers model (the transformer). bitsandbytes through
    diffusers needs CUDA; on the CPU, `quantize_linears` does the same job after loading."""
    check_choice(choice)
    if choice == NONE:
        return None
    if choice in BNB_CHOICES:
        if device.type != "cuda":
            return None  # loaded unquantized, then quantize_linears()
        require_package("bitsandbytes", choice)
        from diffusers import BitsAndBytesConfig

        if choice == INT8_BNB:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
        )
    require_package("torchao", choice)
    from diffusers import TorchAoConfig

    return TorchAoConfig(_torchao_int8())


def needs_manual_bnb(choice: str, device: torch.device) -> bool:
    """True when a diffusers model must be quantized by `quantize_linears` (bitsandbytes, CPU)."""
    return choice in BNB_CHOICES and device.type != "cuda"


def quantize_linears(
    module: torch.nn.Module, choice: str, compute_dtype: torch.dtype, device: torch.device
) -> tuple[int, int]:
    """Replace the module's nn.Linear layers with bitsandbytes layers on `device`, in place,
    one layer at a time so that the peak stays about one layer above the quantized size.
    Returns (layers quantized, layers kept as they were). nf4 skips layers whose in-features
    are not a multiple of 64, which bitsandbytes cannot pack on the CPU."""
    require_package("bitsandbytes", choice)
    import bitsandbytes as bnb

    targets = [(name, m) for name, m in module.named_modules() if type(m) is torch.nn.Linear]
    done = kept = 0
    for name, linear in targets:
        if choice == NF4_BNB and linear.in_features % 64 != 0:
            kept += 1
            continue
        weight = linear.weight.data
        bias = linear.bias
        if choice == INT8_BNB:
            q = bnb.nn.Linear8bitLt(
                linear.in_features, linear.out_features, bias=bias is not None, has_fp16_weights=False
            )
            q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            q = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=bias is not None,
                compute_dtype=compute_dtype,
                quant_type="nf4",
                device="meta",
            )
            q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
        if bias is not None:
            q.bias = torch.nn.Parameter(bias.data.to(compute_dtype), requires_grad=False)
        q = q.to(device)  # moving the weight to a device is what quantizes it
        _set_submodule(module, name, q)
        done += 1
    return done, kept


def _set_submodule(root: torch.nn.Module, dotted: str, new: torch.nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
