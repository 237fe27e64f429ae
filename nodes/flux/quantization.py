"""Weight quantization for the large FLUX parts (T5 and the transformer): the choices the loader
nodes offer, the library configs they map to, and a CPU path for bitsandbytes on the transformer.

What works where (bitsandbytes 0.50, torchao 0.18, diffusers 0.42, transformers 5.23):
- T5 through transformers: bitsandbytes int8 and nf4 load and run on CUDA and on the CPU
  (nf4 on the CPU needs every quantized layer's in-features to be a multiple of 64); torchao
  int8 weight-only runs on both.
- The transformer through diffusers: bitsandbytes (int8, nf4) needs CUDA, since diffusers'
  quantizer stops with "No GPU found" without one, and its torchao path loads every
  full-precision weight before quantizing. So on the CPU fluxloom builds the transformer empty and
  reads its checkpoint tensor by tensor (`load_streaming`), turning each Linear into bitsandbytes'
  own Linear8bitLt / Linear4bit or a torchao int8 layer as it is read; all of these run there.
  On CUDA diffusers' BitsAndBytesConfig / TorchAoConfig do the job.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from nodes.flux.checkpoint import CheckpointError, read_tensor, read_tensors, tensor_keys

log = logging.getLogger("fluxloom.models")

INT8_BNB = "int8 (bitsandbytes)"
NF4_BNB = "nf4 (bitsandbytes)"
INT8_TORCHAO = "int8 weight-only (torchao)"
NONE = "none"
CHOICES = (INT8_BNB, NF4_BNB, INT8_TORCHAO, NONE)
DEFAULT = INT8_BNB
BNB_CHOICES = (INT8_BNB, NF4_BNB)
# ComfyUI's UNETLoader weight_dtype: Linear weights cast to fp8 when loaded and kept 8-bit, cast
# back per layer at compute (formats/fp8.py). Transformer only; not in the loader nodes' combos.
FP8_E4M3 = "fp8 e4m3fn"
FP8_E5M2 = "fp8 e5m2"
FP8_CHOICES = (FP8_E4M3, FP8_E5M2)
# Bytes per weight value of a quantized Linear, for size estimates before loading (None: as stored).
BYTES_PER_WEIGHT = {INT8_BNB: 1.0, INT8_TORCHAO: 1.0, NF4_BNB: 0.5, FP8_E4M3: 1.0, FP8_E5M2: 1.0}

# bitsandbytes' int8 matmul casts fp32/bf16 activations to fp16 (documented in docs/models.md)
# and says so on every call, through warnings or logging depending on the version.
warnings.filterwarnings("ignore", message=r"MatMul8bitLt: inputs will be cast")
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


class QuantizationError(RuntimeError):
    """A quantization choice cannot be used here; the message says why and what works instead."""


def check_choice(choice: str) -> None:
    if choice not in CHOICES and choice not in FP8_CHOICES:
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


def _library_config(library: str, choice: str, compute_dtype: torch.dtype) -> Any:
    """The quantization_config for `choice` from `library` ("transformers" or "diffusers"):
    both libraries have their own BitsAndBytesConfig / TorchAoConfig with the same arguments."""
    import importlib

    module = importlib.import_module(library)
    if choice in BNB_CHOICES:
        require_package("bitsandbytes", choice)
        if choice == INT8_BNB:
            return module.BitsAndBytesConfig(load_in_8bit=True)
        return module.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
        )
    require_package("torchao", choice)
    return module.TorchAoConfig(_torchao_int8())


def transformers_config(choice: str, compute_dtype: torch.dtype) -> Any | None:
    """quantization_config for a transformers model (T5): works on CUDA and the CPU."""
    check_choice(choice)
    if choice == NONE:
        return None
    return _library_config("transformers", choice, compute_dtype)


def diffusers_config(choice: str, compute_dtype: torch.dtype, device: torch.device) -> Any | None:
    """quantization_config for a diffusers model (the transformer). bitsandbytes through
    diffusers needs CUDA: there is none for it on the CPU, where `load_streaming` quantizes
    the layers instead (see `streams_on`)."""
    check_choice(choice)
    if choice == NONE:
        return None
    if choice in BNB_CHOICES and device.type != "cuda":
        return None  # the CPU path is load_streaming
    return _library_config("diffusers", choice, compute_dtype)


def streams_on(choice: str, device: torch.device) -> bool:
    """Whether fluxloom loads a diffusers model itself, quantizing each Linear as it is read:
    bitsandbytes and torchao on the CPU. (Loading the whole model first, as diffusers does before
    quantizing there, would touch every full-precision weight of the memory-mapped checkpoint, so
    the peak would be the unquantized size plus the quantized one.)"""
    return choice in FP8_CHOICES or (device.type != "cuda" and choice in (INT8_BNB, NF4_BNB, INT8_TORCHAO))


def quantized_linear(
    in_features: int,
    out_features: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    choice: str,
    compute_dtype: torch.dtype,
    device: torch.device,
) -> torch.nn.Module | None:
    """A quantized replacement for one nn.Linear on `device`, or None when this layer cannot be
    quantized with `choice` (nf4 needs in-features that are a multiple of 64 on the CPU)."""
    if choice == NF4_BNB and in_features % 64 != 0:
        return None
    if choice in FP8_CHOICES:
        from nodes.flux.formats.fp8 import fp8_linear

        fp8 = torch.float8_e4m3fn if choice == FP8_E4M3 else torch.float8_e5m2
        return fp8_linear(weight.to(device=device, dtype=fp8), None, bias, compute_dtype)
    bias_param = None if bias is None else torch.nn.Parameter(bias.to(compute_dtype), requires_grad=False)
    if choice == INT8_TORCHAO:
        from torchao.quantization import quantize_

        layer = torch.nn.Linear(in_features, out_features, bias=bias is not None, device="meta")
        layer.weight = torch.nn.Parameter(weight.to(compute_dtype), requires_grad=False)
        layer.bias = bias_param
        layer = layer.to(device)
        quantize_(layer, _torchao_int8())
        return layer
    import bitsandbytes as bnb

    if choice == INT8_BNB:
        layer = bnb.nn.Linear8bitLt(
            in_features, out_features, bias=bias is not None, has_fp16_weights=False, device="meta"
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(
            in_features,
            out_features,
            bias=bias is not None,
            compute_dtype=compute_dtype,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    layer.bias = bias_param
    return layer.to(device)  # moving a bitsandbytes weight to a device is what quantizes it


def load_streaming(
    model_cls: Any, folder: Path, choice: str, compute_dtype: torch.dtype, device: torch.device
) -> tuple[torch.nn.Module, int, int]:
    """Build `model_cls` from the config in `folder` without weights, then read its safetensors
    one tensor at a time (plain reads, no memory map), quantizing each Linear weight as it comes.
    The peak is the quantized model plus one full-precision layer. Returns (model, layers
    quantized, layers kept in full precision)."""
    from accelerate import init_empty_weights

    if choice in BNB_CHOICES:
        require_package("bitsandbytes", choice)
    else:
        require_package("torchao", choice)
    with init_empty_weights():
        model = model_cls.from_config(model_cls.load_config(folder))
    linears = {name: m for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    later: dict[str, tuple[Path, str]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        for key, tensor in read_tensors(file, skip=lambda k: _linear_weight(k, linears)):
            module_name, _, name = key.rpartition(".")
            _assign(model, module_name, name, tensor, compute_dtype, device)
        for key in tensor_keys(file):
            if _linear_weight(key, linears):
                later[key.rpartition(".")[0]] = (file, key)
    done = kept = 0
    for name, linear in linears.items():
        if name not in later:
            raise CheckpointError(
                f"{folder}: the checkpoint has no weight for layer {name!r}; is the download complete?"
            )
        file, key = later[name]
        weight = read_tensor(file, key).to(compute_dtype)
        bias = None if linear.bias is None else linear.bias.data
        q = quantized_linear(
            linear.in_features, linear.out_features, weight, bias, choice, compute_dtype, device
        )
        if q is None:
            q = torch.nn.Linear(linear.in_features, linear.out_features, bias=bias is not None, device="meta")
            q.weight = torch.nn.Parameter(weight.to(device), requires_grad=False)
            q.bias = None if bias is None else torch.nn.Parameter(bias.to(device), requires_grad=False)
            kept += 1
        else:
            done += 1
        set_submodule(model, name, q)
        del weight
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        raise CheckpointError(
            f"{folder}: the checkpoint has no values for {', '.join(missing[:5])}; is the download complete?"
        )
    return model.eval(), done, kept


def _linear_weight(key: str, linears: dict[str, torch.nn.Module]) -> bool:
    module_name, _, name = key.rpartition(".")
    return name == "weight" and module_name in linears


def _assign(
    model: torch.nn.Module, module_name: str, name: str, tensor: torch.Tensor, dtype: torch.dtype, device
) -> None:
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        log.debug("checkpoint key %s.%s has no place in the model; skipped", module_name, name)
        return
    value = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    if name in module._parameters:
        module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
    elif name in module._buffers:
        module._buffers[name] = value
    else:
        log.debug("checkpoint key %s.%s has no place in the model; skipped", module_name, name)


def set_submodule(root: torch.nn.Module, dotted: str, new: torch.nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
