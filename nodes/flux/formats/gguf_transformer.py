"""GGUF FLUX transformers (city96's `flux1-dev-Q8_0.gguf`, `-Q4_K_S`, `-Q4_0`, ...): read with the
`gguf` package, kept quantized in memory with diffusers' GGUF support.

The tensors carry BFL's key names, so the conversion is bfl_transformer's. A quantized weight is
held as diffusers' `GGUFParameter` (its raw blocks, uint8) inside a `GGUFLinear`, which
dequantizes it at every call with diffusers' torch functions: that runs on the CPU and on CUDA,
and the model's size in memory is the file's. Rows of a quantized tensor are whole blocks, so
cutting BFL's fused qkv into diffusers' q, k, v is cutting rows, as for a plain tensor. Tensors
the file keeps in F16/F32 (norms, biases, layers whose width is not a multiple of the block) are
ordinary tensors and load like those of a safetensors file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nodes.flux.formats.checkpoint_split import FormatError

FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16}
_HUB_KERNELS = "DIFFUSERS_GGUF_CUDA_KERNELS"


def gguf_utils():
    """diffusers.quantizers.gguf.utils, imported without letting it reach the Hugging Face Hub:
    with DIFFUSERS_GGUF_CUDA_KERNELS set it downloads CUDA kernels at import, and fluxloom never
    downloads anything at run time."""
    if os.environ.get(_HUB_KERNELS, "false").lower() in ("1", "true", "yes"):
        raise FormatError(
            f"{_HUB_KERNELS} is set, which makes diffusers download GGUF kernels from the Hugging Face "
            "Hub; fluxloom never downloads at run time: unset it (GGUF runs without those kernels)"
        )
    from diffusers.quantizers.gguf import utils

    return utils


class GGUFFile:
    """A GGUF file with TensorFile's interface: logical shapes (numpy order), type names ("Q8_0",
    "F16", ...), string metadata, and each tensor read with plain file reads on demand
    (GGUFReader maps the whole file; only its header is used here)."""

    def __init__(self, path: Path | str) -> None:
        import gguf

        self.path = Path(path)
        try:
            reader = gguf.GGUFReader(self.path)
        except Exception as exc:  # a truncated or foreign file fails anywhere in the parser
            raise FormatError(f"{self.path} is not a readable GGUF file ({exc}); download it again") from exc
        self._info = {
            t.name: (
                t.tensor_type,
                tuple(int(d) for d in reversed(t.shape.tolist())),
                t.data_offset,
                t.n_bytes,
            )
            for t in reader.tensors
        }
        self.metadata = {}
        for name, f in reader.fields.items():
            if f.types == [gguf.GGUFValueType.STRING]:
                self.metadata[name] = str(f.contents())
        del reader
        self._fh = None

    def __enter__(self) -> GGUFFile:
        self._fh = open(self.path, "rb")
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()
        self._fh = None

    def keys(self) -> list[str]:
        return list(self._info)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._info[key][1]

    def stored_dtype(self, key: str) -> str:
        return self._info[key][0].name

    def nbytes(self, key: str) -> int:
        return self._info[key][3]

    def read(self, key: str) -> torch.Tensor:
        """A plain tensor for F32/F16, else diffusers' GGUFParameter holding the raw blocks."""
        qtype, shape, offset, n = self._info[key]
        buf = bytearray(n)
        fh = self._fh or open(self.path, "rb")
        try:
            fh.seek(offset)
            if fh.readinto(buf) != n:
                raise FormatError(f"{self.path} ends before its tensor {key} does; download it again")
        finally:
            if fh is not self._fh:
                fh.close()
        if qtype.name in FLOAT_TYPES:
            return torch.frombuffer(buf, dtype=FLOAT_TYPES[qtype.name]).reshape(shape)
        import gguf

        utils = gguf_utils()
        if qtype not in utils.SUPPORTED_GGUF_QUANT_TYPES:
            raise FormatError(f"{self.path}: tensor {key} is {qtype.name}, which diffusers cannot dequantize")
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        raw = torch.frombuffer(buf, dtype=torch.uint8).reshape(*shape[:-1], shape[-1] // block * type_size)
        return utils.GGUFParameter(raw, quant_type=qtype)


def is_gguf_tensor(t: torch.Tensor) -> bool:
    return hasattr(t, "quant_type") and hasattr(t, "quant_shape")


def dequantize(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor with the real values of a GGUFParameter (fp32 or fp16 as diffusers gives)."""
    return gguf_utils().dequantize_gguf_tensor(t) if is_gguf_tensor(t) else t


def gguf_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, compute_dtype: torch.dtype, device: torch.device
) -> torch.nn.Module:
    """diffusers' GGUFLinear holding `weight` (a GGUFParameter) still quantized, on `device`."""
    utils = gguf_utils()
    out_features, in_features = weight.quant_shape
    with torch.device("meta"):
        layer = utils.GGUFLinear(in_features, out_features, bias is not None, compute_dtype=compute_dtype)
    layer.weight = utils.GGUFParameter(weight.as_tensor().to(device), quant_type=weight.quant_type)
    layer.bias = None if bias is None else torch.nn.Parameter(bias.to(device), requires_grad=False)
    layer.requires_grad_(False)
    return layer
