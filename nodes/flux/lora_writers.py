"""Writing a FLUX LoRA in the layouts users' files come in: kohya (BFL module names, fused qkv),
kohya's diffusers-named variant, diffusers/PEFT, and xlabs. The input is what `read_lora` gives
back: `LoraPiece`s by diffusers module name, so a LoRA read in one layout can be written in
another. Used by the tests (the same LoRA in every layout) and by the demo files.

Fusing diffusers' separate layers into BFL's fused ones (q|k|v, and a single block's q|k|v|mlp)
stacks the parts' down weights and puts their up weights on a block diagonal, each part padded to
the largest part's rank: the fused delta is the parts' deltas stacked row-wise, and diffusers'
converters split it back into the same pieces (the "sparse" case of kohya's converter).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from nodes.flux.lora_formats import METADATA_KEY, LoraPiece

Layers = dict[str, LoraPiece]

_DOUBLE_FUSED = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_DOUBLE = {
    "img_attn_proj": "attn.to_out.0",
    "img_mlp_0": "ff.net.0.proj",
    "img_mlp_2": "ff.net.2",
    "img_mod_lin": "norm1.linear",
    "txt_attn_proj": "attn.to_add_out",
    "txt_mlp_0": "ff_context.net.0.proj",
    "txt_mlp_2": "ff_context.net.2",
    "txt_mod_lin": "norm1_context.linear",
}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
_SINGLE = {"linear2": "proj_out", "modulation_lin": "norm.linear"}
_GLOBAL = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in_out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in_in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in_out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in_in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in_out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer_linear": "proj_out",
    "final_layer_adaLN_modulation_1": "norm_out.linear",  # BFL (shift, scale) = diffusers (scale, shift)
}
_XLABS_DOUBLE = {
    "qkv_lora1": _DOUBLE_FUSED["img_attn_qkv"],
    "proj_lora1": ("attn.to_out.0",),
    "qkv_lora2": _DOUBLE_FUSED["txt_attn_qkv"],
    "proj_lora2": ("attn.to_add_out",),
}
_XLABS_SINGLE = {"qkv_lora": ("attn.to_q", "attn.to_k", "attn.to_v"), "proj_lora": ("proj_out",)}
# The blocks' attention layers: all that xlabs holds, and all that diffusers reads of kohya's
# diffusers-named variant.
_ATTENTION = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)


def random_lora(
    model: torch.nn.Module, *, rank: int = 4, alpha: float = 4.0, seed: int = 0, std: float = 0.05
) -> Layers:
    """A random LoRA on the attention layers of a FluxTransformer2DModel's blocks (the layers every
    layout can hold): the demo LoRA. Same seed, same LoRA."""
    g = torch.Generator().manual_seed(seed)
    targets = tuple(f"attn.{n}" for n in _ATTENTION)
    layers = {}
    for name, module in model.named_modules():
        if name.startswith(("transformer_blocks.", "single_transformer_blocks.")) and name.endswith(targets):
            down = torch.randn(rank, module.in_features, generator=g) * std
            up = torch.randn(module.out_features, rank, generator=g) * std
            layers[name] = LoraPiece(down, up, alpha / rank)
    return layers


def write_peft(
    path: Path, layers: Layers, *, prefix: str = "transformer.", alpha: str = "metadata", dtype=None
) -> Path:
    """diffusers/PEFT layout: `{prefix}X.lora_A.weight` / `.lora_B.weight`. A scale other than 1 is
    written as diffusers writes it (alpha="metadata": a LoraConfig in `lora_adapter_metadata`) or
    as per-module `X.alpha` keys (alpha="keys")."""
    if alpha not in ("metadata", "keys"):
        raise ValueError(f"alpha must be 'metadata' or 'keys', not {alpha!r}")
    tensors: dict[str, torch.Tensor] = {}
    for name, piece in layers.items():
        tensors[f"{prefix}{name}.lora_A.weight"] = piece.down
        tensors[f"{prefix}{name}.lora_B.weight"] = piece.up
        if alpha == "keys" and piece.scale != 1.0:
            tensors[f"{prefix}{name}.alpha"] = torch.tensor(piece.scale * piece.rank)
    metadata = None
    if alpha == "metadata" and any(p.scale != 1.0 for p in layers.values()):
        config = _lora_config(layers)
        tag = prefix.rstrip(".")
        metadata = {METADATA_KEY: json.dumps({f"{tag}.{k}" if tag else k: v for k, v in config.items()})}
    return _save(path, tensors, dtype, metadata)


def _lora_config(layers: Layers) -> dict:
    """The LoraConfig fields diffusers saves: r and lora_alpha (the most common), patterns for the rest."""
    r = Counter(p.rank for p in layers.values()).most_common(1)[0][0]
    alphas = {name: p.scale * p.rank for name, p in layers.items()}
    lora_alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {
        "r": r,
        "lora_alpha": lora_alpha,
        "rank_pattern": {n: p.rank for n, p in layers.items() if p.rank != r},
        "alpha_pattern": {n: a for n, a in alphas.items() if a != lora_alpha},
        "target_modules": sorted(layers),
    }


def write_kohya(path: Path, layers: Layers, *, dtype=None) -> Path:
    """kohya / sd-scripts layout with BFL module names: `lora_unet_double_blocks_0_img_attn_qkv
    .lora_down.weight`, `.lora_up.weight`, `.alpha` (alpha = scale x rank)."""
    tensors: dict[str, torch.Tensor] = {}
    for kohya_name, piece in _to_bfl(layers).items():
        tensors[f"lora_unet_{kohya_name}.lora_down.weight"] = piece.down
        tensors[f"lora_unet_{kohya_name}.lora_up.weight"] = piece.up
        tensors[f"lora_unet_{kohya_name}.alpha"] = torch.tensor(piece.scale * piece.rank)
    return _save(path, tensors, dtype)


def write_kohya_diffusers(path: Path, layers: Layers, *, dtype=None) -> Path:
    """kohya's variant with diffusers module names: `lora_transformer_transformer_blocks_0_attn_to_q
    .lora_down.weight`. diffusers reads only the attention layers of this variant."""
    tensors: dict[str, torch.Tensor] = {}
    for name, piece in layers.items():
        if not name.startswith(("transformer_blocks.", "single_transformer_blocks.")) or not name.endswith(
            tuple(f"attn.{n}" for n in _ATTENTION)
        ):
            raise ValueError(f"kohya's diffusers-named layout cannot hold layer {name!r} (attention only)")
        key = "lora_transformer_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = piece.down
        tensors[f"{key}.lora_up.weight"] = piece.up
        tensors[f"{key}.alpha"] = torch.tensor(piece.scale * piece.rank)
    return _save(path, tensors, dtype)


def write_xlabs(path: Path, layers: Layers, *, prefix: str = "", dtype=None) -> Path:
    """XLabs' layout (`double_blocks.0.processor.qkv_lora1.down.weight`, ...): attention layers of
    the blocks only, no alpha (the scale is folded into the up weights)."""
    tensors: dict[str, torch.Tensor] = {}
    left = dict(layers)
    for block_kind, table in (("double_blocks", _XLABS_DOUBLE), ("single_blocks", _XLABS_SINGLE)):
        ours = "transformer_blocks" if block_kind == "double_blocks" else "single_transformer_blocks"
        for i in _block_indices(layers, ours):
            for xname, parts in table.items():
                names = [f"{ours}.{i}.{p}" for p in parts]
                if not any(n in left for n in names):
                    continue
                piece = _fuse(names, [left.pop(n, None) for n in names], fold_scale=True)
                key = f"{prefix}{block_kind}.{i}.processor.{xname}"
                tensors[f"{key}.down.weight"] = piece.down
                tensors[f"{key}.up.weight"] = piece.up
    if left:
        raise ValueError(f"the xlabs layout cannot hold layers {', '.join(sorted(left))}")
    return _save(path, tensors, dtype)


def _to_bfl(layers: Layers) -> dict[str, LoraPiece]:
    """diffusers-named pieces → kohya names (BFL modules, underscores), fused where BFL fuses."""
    left = dict(layers)
    out: dict[str, LoraPiece] = {}
    for block_kind, ours, fused, plain in (
        ("double_blocks", "transformer_blocks", _DOUBLE_FUSED, _DOUBLE),
        ("single_blocks", "single_transformer_blocks", _SINGLE_FUSED, _SINGLE),
    ):
        for i in _block_indices(layers, ours):
            for bfl, parts in fused.items():
                names = [f"{ours}.{i}.{p}" for p in parts]
                if any(n in left for n in names):
                    out[f"{block_kind}_{i}_{bfl}"] = _fuse(names, [left.pop(n, None) for n in names])
            for bfl, part in plain.items():
                if (piece := left.pop(f"{ours}.{i}.{part}", None)) is not None:
                    out[f"{block_kind}_{i}_{bfl}"] = piece
    for bfl, name in _GLOBAL.items():
        if (piece := left.pop(name, None)) is not None:
            if name == "norm_out.linear":
                piece = LoraPiece(piece.down, torch.cat(piece.up.chunk(2, dim=0)[::-1]), piece.scale)
            out[bfl] = piece
    if left:
        raise ValueError(f"layers {', '.join(sorted(left))} have no kohya (BFL) name")
    return out


def _block_indices(layers: Layers, ours: str) -> list[int]:
    return sorted({int(n.split(".")[1]) for n in layers if n.startswith(f"{ours}.")})


def _fuse(names: list[str], pieces: list[LoraPiece | None], fold_scale: bool = False) -> LoraPiece:
    """One fused piece from the parts (None: a part the LoRA leaves alone, written as zeros)."""
    given = [p for p in pieces if p is not None]
    width = given[0].down.shape[1]
    rank = max(p.rank for p in given)
    same_scale = len({p.scale for p in given}) == 1 and not fold_scale
    scale = given[0].scale if same_scale else 1.0
    downs, ups = [], []
    for name, p in zip(names, pieces, strict=True):
        if p is None:  # q, k, v have the model width as outputs; FLUX's MLP is 4 x the width
            out = 4 * width if name.endswith("proj_mlp") else width
            p = LoraPiece(given[0].down.new_zeros(rank, width), given[0].up.new_zeros(out, rank), scale)
        up = p.up if same_scale else (p.up.float() * p.scale).to(p.up.dtype)
        downs.append(torch.cat([p.down, p.down.new_zeros(rank - p.rank, width)]))
        ups.append(torch.cat([up, up.new_zeros(up.shape[0], rank - p.rank)], dim=1))
    return LoraPiece(torch.cat(downs), torch.block_diag(*ups), scale)


def _save(path: Path, tensors: dict[str, torch.Tensor], dtype, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Cloned: safetensors refuses tensors that share memory (one down weight in two places).
    out = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() and v.dim() else v)
        .contiguous()
        .clone()
        for k, v in tensors.items()
    }
    save_file(out, str(path), metadata=metadata)
    return path
