"""FLUX.1 transformers in BFL's original key layout (`double_blocks.0.img_attn.qkv.weight`, ...):
the diffusers config read from the tensors, and the key conversion to diffusers'
FluxTransformer2DModel as a *plan* — one `Piece` per diffusers tensor, naming the BFL tensor it
comes from and the rows it takes. The same plan converts an in-memory state dict, streams a
file into a model one tensor at a time (`load_transformer_file`), and, run backwards, writes our
models out in BFL's layout (writers.py).

Dimensions come from the tensors, so tiny test models and FLUX.1 itself go through the same
code (diffusers' own converter hard-codes FLUX.1's width): hidden size from `img_in`, heads from
the QK-norm scale (its length is the head dim), T5 and CLIP widths from `txt_in` and `vector_in`,
block counts from the keys, guidance from `guidance_in`. The RoPE axes are not in any tensor:
FLUX.1's are (16, 56, 56) at head dim 128; other widths need the safetensors metadata
`fluxloom.axes_dims_rope` ("8,12,12"), which fluxloom's writers put there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nodes.flux import quantization as q
from nodes.flux.formats import streaming
from nodes.flux.formats.checkpoint_split import (
    TRANSFORMER,
    FormatError,
    Part,
    TensorDict,
    TensorFile,
    part_of,
)
from nodes.flux.formats.fp8 import is_scale_key
from nodes.flux.formats.gguf_transformer import GGUFFile
from nodes.flux.formats.streaming import Piece

FLUX_ROPE = (16, 56, 56)
FLUX_HEAD_DIM = 128
ROPE_METADATA = "fluxloom.axes_dims_rope"
MLP_RATIO = 4  # diffusers' FluxTransformer2DModel fixes it

# Keys that tell the two layouts apart.
BFL_MARKERS = ("img_in.weight", "final_layer.linear.weight")
DIFFUSERS_MARKERS = ("x_embedder.weight", "proj_out.weight")


# --- which layout, which dimensions ---------------------------------------------------------


def layout(keys) -> str:
    """ "bfl" or "diffusers", or a FormatError: the keys are not a FLUX.1 transformer's."""
    keys = set(keys)
    if all(k in keys for k in BFL_MARKERS):
        return "bfl"
    if all(k in keys for k in DIFFUSERS_MARKERS) and any(k.startswith("transformer_blocks.") for k in keys):
        return "diffusers"
    raise FormatError(
        "not a FLUX.1 transformer: it has neither BFL's keys (img_in, double_blocks, final_layer) "
        "nor diffusers' (x_embedder, transformer_blocks, proj_out)"
    )


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


# For each dimension, the tensor (and which of its dims) it is read from, in each layout.
_DIMS = {
    "bfl": {
        "hidden": ("img_in.weight", 0),
        "in_channels": ("img_in.weight", 1),
        "out_channels": ("final_layer.linear.weight", 0),
        "joint": ("txt_in.weight", 1),
        "pooled": ("vector_in.in_layer.weight", 1),
        "mlp": ("double_blocks.0.img_mlp.0.weight", 0),
        "head_dim": ("double_blocks.0.img_attn.norm.query_norm.scale", 0),
        "single_head_dim": ("single_blocks.0.norm.query_norm.scale", 0),
    },
    "diffusers": {
        "hidden": ("x_embedder.weight", 0),
        "in_channels": ("x_embedder.weight", 1),
        "out_channels": ("proj_out.weight", 0),
        "joint": ("context_embedder.weight", 1),
        "pooled": ("time_text_embed.text_embedder.linear_1.weight", 1),
        "mlp": ("transformer_blocks.0.ff.net.0.proj.weight", 0),
        "head_dim": ("transformer_blocks.0.attn.norm_q.weight", 0),
        "single_head_dim": ("single_transformer_blocks.0.attn.norm_q.weight", 0),
    },
}
_BLOCKS = {
    "bfl": (r"double_blocks\.(\d+)\.", r"single_blocks\.(\d+)\.", "guidance_in.in_layer.weight"),
    "diffusers": (
        r"transformer_blocks\.(\d+)\.",
        r"single_transformer_blocks\.(\d+)\.",
        "time_text_embed.guidance_embedder.linear_1.weight",
    ),
}


def infer_config(source, where: str = "") -> dict[str, Any]:
    """The diffusers FluxTransformer2DModel config of the transformer in `source` (a file part or
    a TensorDict: anything with keys(), shape() and metadata), read from its tensors' shapes."""
    keys = source.keys()
    kind = layout(keys)
    where = where or str(source.path)

    def dim(name: str) -> int | None:
        key, axis = _DIMS[kind][name]
        return source.shape(key)[axis] if key in keys else None

    missing = [_DIMS[kind][n][0] for n in ("hidden", "joint", "pooled", "out_channels") if dim(n) is None]
    if missing:
        raise FormatError(f"{where}: not a FLUX.1 transformer, it has no {', '.join(missing)}")
    double_re, single_re, guidance_key = _BLOCKS[kind]
    hidden = dim("hidden")
    head_dim = dim("head_dim") or dim("single_head_dim")
    if not head_dim or hidden % head_dim:
        raise FormatError(
            f"{where}: cannot tell the attention head size (no QK-norm scale that divides {hidden})"
        )
    mlp = dim("mlp")
    if mlp is not None and mlp != MLP_RATIO * hidden:
        raise FormatError(
            f"{where}: its MLP is {mlp} wide for hidden size {hidden}; diffusers' FLUX transformer "
            f"needs {MLP_RATIO}x"
        )
    in_channels = dim("in_channels")
    return {
        "_class_name": "FluxTransformer2DModel",
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": None if dim("out_channels") == in_channels else dim("out_channels"),
        "num_layers": _count(keys, double_re),
        "num_single_layers": _count(keys, single_re),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": dim("joint"),
        "pooled_projection_dim": dim("pooled"),
        "guidance_embeds": guidance_key in keys,
        "axes_dims_rope": list(rope_axes(head_dim, source.metadata, where)),
    }


def rope_axes(head_dim: int, metadata: dict[str, str], where: str) -> tuple[int, int, int]:
    text = metadata.get(ROPE_METADATA)
    if text is None:
        if head_dim == FLUX_HEAD_DIM:
            return FLUX_ROPE
        raise FormatError(
            f"{where}: its attention heads are {head_dim} wide, not FLUX.1's {FLUX_HEAD_DIM}, and the file "
            f'does not say its RoPE axes (metadata {ROPE_METADATA!r}, e.g. "8,12,12"), which no tensor holds'
        )
    try:
        axes = tuple(int(a) for a in text.split(","))
    except ValueError:
        axes = ()
    if len(axes) != 3 or sum(axes) != head_dim or any(a % 2 for a in axes):
        raise FormatError(
            f"{where}: metadata {ROPE_METADATA}={text!r} is not three even numbers summing to "
            f"the head size {head_dim}"
        )
    return axes  # type: ignore[return-value]


# --- the key conversion ---------------------------------------------------------------------


def _linear(plan: list[Piece], source: str, target: str) -> None:
    plan.append(Piece(f"{target}.weight", f"{source}.weight"))
    plan.append(Piece(f"{target}.bias", f"{source}.bias"))


def _split(plan: list[Piece], source: str, targets: list[str], sizes: list[int]) -> None:
    """A fused BFL Linear (qkv, linear1) cut by rows into diffusers' separate Linears."""
    start = 0
    for target, size in zip(targets, sizes, strict=True):
        for name in ("weight", "bias"):
            plan.append(Piece(f"{target}.{name}", f"{source}.{name}", (start, start + size)))
        start += size


def _double_block(plan: list[Piece], i: int, hidden: int) -> None:
    s, t = f"double_blocks.{i}.", f"transformer_blocks.{i}."
    _linear(plan, s + "img_mod.lin", t + "norm1.linear")
    _linear(plan, s + "txt_mod.lin", t + "norm1_context.linear")
    _split(plan, s + "img_attn.qkv", [t + "attn.to_q", t + "attn.to_k", t + "attn.to_v"], [hidden] * 3)
    _split(
        plan,
        s + "txt_attn.qkv",
        [t + "attn.add_q_proj", t + "attn.add_k_proj", t + "attn.add_v_proj"],
        [hidden] * 3,
    )
    for stream, query, key in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
        plan.append(Piece(f"{t}attn.{query}.weight", f"{s}{stream}_attn.norm.query_norm.scale"))
        plan.append(Piece(f"{t}attn.{key}.weight", f"{s}{stream}_attn.norm.key_norm.scale"))
    _linear(plan, s + "img_mlp.0", t + "ff.net.0.proj")
    _linear(plan, s + "img_mlp.2", t + "ff.net.2")
    _linear(plan, s + "txt_mlp.0", t + "ff_context.net.0.proj")
    _linear(plan, s + "txt_mlp.2", t + "ff_context.net.2")
    _linear(plan, s + "img_attn.proj", t + "attn.to_out.0")
    _linear(plan, s + "txt_attn.proj", t + "attn.to_add_out")


def _single_block(plan: list[Piece], i: int, hidden: int) -> None:
    s, t = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
    _linear(plan, s + "modulation.lin", t + "norm.linear")
    targets = [t + "attn.to_q", t + "attn.to_k", t + "attn.to_v", t + "proj_mlp"]
    _split(plan, s + "linear1", targets, [hidden, hidden, hidden, MLP_RATIO * hidden])
    plan.append(Piece(t + "attn.norm_q.weight", s + "norm.query_norm.scale"))
    plan.append(Piece(t + "attn.norm_k.weight", s + "norm.key_norm.scale"))
    _linear(plan, s + "linear2", t + "proj_out")


def bfl_plan(config: dict[str, Any]) -> list[Piece]:
    """Every diffusers tensor of a FluxTransformer2DModel with `config`, and where it lies in BFL's
    layout (the mapping of diffusers' convert_flux_transformer_checkpoint_to_diffusers)."""
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    plan: list[Piece] = []
    _linear(plan, "time_in.in_layer", "time_text_embed.timestep_embedder.linear_1")
    _linear(plan, "time_in.out_layer", "time_text_embed.timestep_embedder.linear_2")
    _linear(plan, "vector_in.in_layer", "time_text_embed.text_embedder.linear_1")
    _linear(plan, "vector_in.out_layer", "time_text_embed.text_embedder.linear_2")
    if config["guidance_embeds"]:
        _linear(plan, "guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        _linear(plan, "guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    _linear(plan, "txt_in", "context_embedder")
    _linear(plan, "img_in", "x_embedder")
    for i in range(config["num_layers"]):
        _double_block(plan, i, hidden)
    for i in range(config["num_single_layers"]):
        _single_block(plan, i, hidden)
    _linear(plan, "final_layer.linear", "proj_out")
    for name in ("weight", "bias"):
        plan.append(
            Piece(f"norm_out.linear.{name}", f"final_layer.adaLN_modulation.1.{name}", swap_halves=True)
        )
    return plan


def conversion_plan(source, config: dict[str, Any]) -> list[Piece]:
    """The plan for `source`: BFL's conversion, or the identity for a file in diffusers' layout."""
    if layout(source.keys()) == "bfl":
        return bfl_plan(config)
    return [Piece(k, k) for k in source.keys() if not is_scale_key(k)]


def convert_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """(config, diffusers state dict) of an in-memory BFL (or diffusers-layout) state dict. The
    tensors are views of the given ones where the conversion allows."""
    source = TensorDict(state_dict, metadata or {})
    config = infer_config(source)
    plan = conversion_plan(source, config)
    _check_sources(source, plan)
    return config, {p.target: p.take(state_dict[p.source]) for p in plan}


def _check_sources(source, plan: list[Piece]) -> None:
    keys = set(source.keys())
    missing = sorted({p.source for p in plan if p.source not in keys})
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FormatError(
            f"{source.path}: the FLUX transformer lacks {', '.join(missing[:5])}{more}; is the file complete?"
        )


def to_bfl(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers FluxTransformer2DModel state dict in BFL's layout (the plan run backwards)."""
    grouped: dict[str, list[Piece]] = {}
    for piece in bfl_plan(config):
        grouped.setdefault(piece.source, []).append(piece)
    out = {}
    for source, pieces in grouped.items():
        if pieces[0].rows is not None:
            ordered = sorted(pieces, key=lambda p: p.rows[0])
            out[source] = torch.cat([state_dict[p.target] for p in ordered], dim=0)
        else:
            out[source] = pieces[0].take(state_dict[pieces[0].target])  # a swap is its own inverse
    return out


# --- loading a file -------------------------------------------------------------------------


def open_transformer(path):
    """The transformer part of a file: a GGUF file, a safetensors file holding the transformer
    alone (BFL or diffusers layout), or the `model.diffusion_model.` part of an all-in-one one."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        file = GGUFFile(path)
        prefix = "model.diffusion_model."
        return Part(file, prefix if any(k.startswith(prefix) for k in file.keys()) else "")
    return part_of(TensorFile(path), TRANSFORMER)


def load_transformer_file(path, quantization: str = "none", dtype="auto", device="cpu") -> torch.nn.Module:
    """A diffusers FluxTransformer2DModel from one file (BFL or diffusers layout; bf16/fp16/fp32,
    fp8, scaled fp8, GGUF; alone or in an all-in-one checkpoint), streamed onto `device` with
    `quantization` (one of nodes.flux.quantization.CHOICES) and compute `dtype` (a torch dtype,
    or "auto"/"bf16"/"fp16"/"fp32"). GGUF-quantized layers stay GGUF whatever the choice."""
    from diffusers import FluxTransformer2DModel

    q.check_choice(quantization)
    device = torch.device(device)
    part = open_transformer(path)
    config = infer_config(part)
    dtype = streaming.resolve_dtype(dtype, part, device)
    model = streaming.build_empty(FluxTransformer2DModel, config)
    report = streaming.stream_into(model, part, conversion_plan(part, config), quantization, dtype, device)
    streaming.log.info("transformer %s: %s Linear layers", part.path.name, report.note())
    return model.eval()


def estimate_file_bytes(
    path, quantization: str = "none", dtype=torch.bfloat16, device="cpu", part: str = TRANSFORMER
) -> int:
    """What load_transformer_file(path, quantization, dtype, device) will take in memory, from
    the file's header alone (for the model manager's budgets); with part="vae", what
    load_vae_file(path, dtype, device) will."""
    source = open_transformer(path) if part == TRANSFORMER else part_of(TensorFile(Path(path)), part)
    dtype = streaming.resolve_dtype(dtype, source, torch.device(device))
    return streaming.estimate_bytes(source, quantization, dtype)
