"""Writing our diffusers-layout models out as the single files ComfyUI users have: BFL-layout
transformers (bf16/fp16/fp32, fp8, scaled fp8), BFL-layout VAEs, all-in-one checkpoints, and GGUF
transformers (Q8_0, Q4_0, Q4_K). The tests and the demo model use them, so that every file format
fluxloom reads is also one it can make from the demo's weights.

What no tensor holds goes into the metadata: `fluxloom.axes_dims_rope` when the RoPE axes are not
FLUX.1's, `fluxloom.norm_num_groups` when the VAE's group count is not 32.

GGUF: `gguf.quants` quantizes Q8_0 and Q4_0 but not the K-quants, so Q4_K is packed here (block
of 256 values: fp16 d and dmin, twelve bytes of 6-bit sub-block scales and mins, 128 bytes of
4-bit values; ggml's layout, checked against gguf's and diffusers' dequantizers in the tests). As
in real GGUF files, only Linear weights whose rows are whole blocks are quantized; 1-D tensors
stay F32 and other 2-D ones F16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodes.flux.formats.bfl_transformer import FLUX_ROPE, ROPE_METADATA, to_bfl
from nodes.flux.formats.bfl_vae import FLUX_GROUPS, GROUPS_METADATA, to_bfl_vae
from nodes.flux.formats.fp8 import SCALED_MARKER, scale_key

ALL_IN_ONE_PREFIXES = {
    "transformer": "model.diffusion_model.",
    "vae": "vae.",
    "clip_l": "text_encoders.clip_l.transformer.",
    "t5xxl": "text_encoders.t5xxl.transformer.",
}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in module.state_dict().items()}


def transformer_metadata(model: torch.nn.Module) -> dict[str, str]:
    axes = tuple(model.config.axes_dims_rope)
    return {} if axes == FLUX_ROPE else {ROPE_METADATA: ",".join(str(a) for a in axes)}


def vae_metadata(vae: torch.nn.Module) -> dict[str, str]:
    groups = vae.config.norm_num_groups
    return {} if groups == FLUX_GROUPS else {GROUPS_METADATA: str(groups)}


def bfl_transformer_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diffusers FluxTransformer2DModel's weights under BFL's names."""
    return to_bfl(_state(model), dict(model.config))


def to_fp8(
    state: dict[str, torch.Tensor], fp8: torch.dtype, scaled: bool, everything: bool = False
) -> dict[str, torch.Tensor]:
    """Linear weights (2-D `.weight`s) as fp8, with per-tensor `scale_weight`s and the
    `scaled_fp8` marker when `scaled`; the rest as they are (or fp8 too, with `everything`, as
    some unscaled fp8 files store their biases and norms)."""
    top = torch.finfo(fp8).max
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        linear = t.ndim == 2 and key.endswith(".weight")
        if linear and scaled:
            scale = (t.float().abs().max() / top).clamp(min=torch.finfo(torch.float32).tiny)
            out[key] = (t.float() / scale).clamp(-top, top).to(fp8)
            out[scale_key(key)] = scale.reshape(())
        elif linear or (everything and t.is_floating_point()):
            out[key] = t.float().clamp(-top, top).to(fp8)
        else:
            out[key] = t
    if scaled:
        out[SCALED_MARKER] = torch.empty(0, dtype=fp8)
    return out


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in state.items()}


def _save(tensors: dict[str, torch.Tensor], path: Path | str, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or None)
    return path


def write_bfl_transformer(
    model: torch.nn.Module,
    path: Path | str,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    fp8: torch.dtype | None = None,
    scaled: bool = False,
    fp8_everything: bool = False,
) -> Path:
    """`model` as a BFL-layout single file (as `diffusion_models/flux1-dev.safetensors`): in
    `dtype`, or with fp8 Linear weights (`fp8=torch.float8_e4m3fn` / `float8_e5m2`, `scaled` for
    scaled fp8 as `flux1-krea-dev_fp8_scaled.safetensors`) and the rest in `dtype`."""
    state = _cast(bfl_transformer_state(model), dtype)
    if fp8 is not None:
        state = to_fp8(state, fp8, scaled, fp8_everything)
    return _save(state, path, transformer_metadata(model))


def write_diffusers_transformer(
    model: torch.nn.Module, path: Path | str, dtype: torch.dtype | None = None
) -> Path:
    """`model` as one safetensors file in diffusers' own key layout."""
    return _save(_cast(_state(model), dtype), path, transformer_metadata(model))


def write_bfl_vae(vae: torch.nn.Module, path: Path | str, dtype: torch.dtype | None = None) -> Path:
    """A diffusers AutoencoderKL as a BFL-layout VAE file (as `vae/ae.safetensors`)."""
    return _save(_cast(to_bfl_vae(_state(vae), dict(vae.config)), dtype), path, vae_metadata(vae))


def text_encoder_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers text encoder's weights as ComfyUI stores them: T5's input embedding once,
    as `shared.weight` (transformers ties `encoder.embed_tokens.weight` to it)."""
    state = _state(module)
    if "shared.weight" in state:
        state.pop("encoder.embed_tokens.weight", None)
    return state


def write_all_in_one(
    path: Path | str,
    *,
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    clip: torch.nn.Module | None = None,
    t5: torch.nn.Module | None = None,
    dtype: torch.dtype | None = torch.bfloat16,
    fp8: torch.dtype | None = None,
) -> Path:
    """An all-in-one checkpoint as ComfyUI's `checkpoints/flux1-dev-fp8.safetensors`: the BFL
    transformer under `model.diffusion_model.` (fp8 Linear weights when `fp8` is given), the VAE
    under `vae.`, CLIP-L and T5 under `text_encoders.{clip_l,t5xxl}.transformer.`."""
    body = _cast(bfl_transformer_state(transformer), dtype)
    if fp8 is not None:
        body = to_fp8(body, fp8, scaled=False)
    parts: dict[str, dict[str, torch.Tensor]] = {
        "transformer": body,
        "vae": _cast(to_bfl_vae(_state(vae), dict(vae.config)), dtype),
    }
    if clip is not None:
        parts["clip_l"] = _cast(text_encoder_state(clip), dtype)
    if t5 is not None:
        parts["t5xxl"] = _cast(text_encoder_state(t5), dtype)
    tensors = {ALL_IN_ONE_PREFIXES[name] + k: v for name, part in parts.items() for k, v in part.items()}
    return _save(tensors, path, {**transformer_metadata(transformer), **vae_metadata(vae)})


# --- GGUF -----------------------------------------------------------------------------------


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """Rows of float32 values (a multiple of 256 each) as Q4_K blocks, uint8 [rows, n/256*144].
    Each 32-value sub-block gets the affine range [min(x, 0), max(x)] over 16 levels; its scale
    and min are 6-bit multiples of the block's fp16 `d` and `dmin`."""
    rows, n = values.shape
    x = values.astype(np.float32).reshape(-1, 8, 32)
    low = np.minimum(x.min(axis=2), 0.0)
    scale = (x.max(axis=2) - low) / 15.0
    mins = -low
    d = (scale.max(axis=1) / 63.0).astype(np.float16)
    dmin = (mins.max(axis=1) / 63.0).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(scale / d.astype(np.float32)[:, None]), 0).clip(0, 63)
        mn = np.where(dmin[:, None] > 0, np.rint(mins / dmin.astype(np.float32)[:, None]), 0).clip(0, 63)
        step = (d.astype(np.float32)[:, None] * sc)[:, :, None]
        offset = (dmin.astype(np.float32)[:, None] * mn)[:, :, None]
        q = np.where(step > 0, np.rint((x + offset) / step), 0).clip(0, 15).astype(np.uint8)
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    packed_scales = np.zeros((x.shape[0], 12), dtype=np.uint8)
    packed_scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    packed_scales[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    packed_scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((mn[:, 4:8] & 0xF) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(-1, 128)  # sub-blocks 2c (low), 2c+1 (high)
    blocks = np.concatenate(
        [d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8), packed_scales, qs], axis=1
    )
    return blocks.reshape(rows, n // 256 * 144)


def gguf_quantize(values: np.ndarray, qtype: Any) -> np.ndarray:
    import gguf

    if qtype == gguf.GGMLQuantizationType.Q4_K:
        return quantize_q4_k(values)
    return gguf.quants.quantize(values, qtype)


def write_gguf_transformer(model: torch.nn.Module, path: Path | str, qtype: str = "Q8_0") -> Path:
    """`model` as a GGUF file in BFL's layout (as city96's `flux1-dev-Q8_0.gguf`), its Linear
    weights quantized to `qtype` ("Q8_0", "Q4_0", "Q4_K") where their rows are whole blocks."""
    import gguf

    quant = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[quant][0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, arch="flux")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in transformer_metadata(model).items():
        writer.add_string(key, value)
    for key, t in bfl_transformer_state(model).items():
        values = t.float().numpy()
        if t.ndim == 2 and key.endswith(".weight") and t.shape[1] % block == 0:
            writer.add_tensor(key, gguf_quantize(values, quant), raw_dtype=quant)
        elif t.ndim <= 1:
            writer.add_tensor(key, values.astype(np.float32))
        else:
            writer.add_tensor(key, values.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
