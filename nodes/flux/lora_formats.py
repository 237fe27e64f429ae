"""Reading a FLUX LoRA file in any common layout into one form: for each Linear layer of diffusers'
FluxTransformer2DModel (`transformer_blocks.0.attn.to_q`, ...), a `LoraPiece(down [r, in],
up [out, r], scale)` whose weight delta is `scale * up @ down`.

The layouts (what FluxPipeline.load_lora_weights accepts, since its own detection and converters
do the work: `FluxLoraLoaderMixin.lora_state_dict`):
- kohya / sd-scripts: `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`, `.lora_up.weight`,
  `.alpha` (BFL's module names, fused qkv), also ComfyUI's `diffusion_model.double_blocks.0...`
  spelling and kohya's diffusers-named variant `lora_transformer_transformer_blocks_0_attn_to_q...`;
  text-encoder keys (`lora_te1_...`) are ignored here (the transformer is all we patch).
- diffusers / PEFT (ai-toolkit, diffusers' trainers): `transformer.transformer_blocks.0.attn.to_q
  .lora_A.weight` / `.lora_B.weight`, with or without the `transformer.` prefix, alpha from
  `<module>.alpha` keys or from diffusers' `lora_adapter_metadata` (lora_alpha / r), else 1.
- BFL / xlabs: `double_blocks.0.processor.qkv_lora1.down.weight`, `proj_lora1`, `qkv_lora2`, ...
  (no alpha), and BFL module names with PEFT suffixes (`diffusion_model.double_blocks.0.img_attn
  .qkv.lora_A.weight`), read as kohya's ComfyUI spelling.

Fused BFL projections (qkv, a single block's linear1 = q|k|v|mlp) are split row-wise into
diffusers' separate layers by the converters; a split LoRA has the same delta, row for row.

Two kohya pieces are converted here rather than by diffusers, for every width alike: a single
block's `linear1` (diffusers' converter hard-codes FLUX.1's 3072/12288 split, so it cannot read a
LoRA for a smaller model; the split is the same, see the tests) and the final layer (diffusers
drops its `.alpha`, kohya applies it).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nodes.flux.checkpoint import CheckpointError, read_tensors

log = logging.getLogger("fluxloom.models")

# Top-level children of FluxTransformer2DModel: a PEFT key that starts with one of these lacks
# the `transformer.` prefix that diffusers' pipeline loader expects.
TRANSFORMER_CHILDREN = (
    "transformer_blocks.",
    "single_transformer_blocks.",
    "x_embedder.",
    "context_embedder.",
    "time_text_embed.",
    "norm_out.",
    "proj_out.",
)
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY

_KOHYA_PART = r"(lora_down\.weight|lora_up\.weight|alpha)"
_LINEAR1 = re.compile(
    rf"^(?:lora_unet_single_blocks_|diffusion_model\.single_blocks\.)(\d+)[._]linear1\.{_KOHYA_PART}$"
)
_FINAL = re.compile(
    rf"^(?:lora_unet_final_layer_|diffusion_model\.final_layer\.)(linear|adaLN_modulation[._]1)\.{_KOHYA_PART}$"
)


class LoraError(ValueError):
    """A LoRA file cannot be used: not a LoRA, not for FLUX, or not for this model's shapes."""


@dataclass(frozen=True)
class LoraPiece:
    """One layer's LoRA: the weight delta is `scale * up @ down`."""

    down: torch.Tensor  # [rank, in_features]
    up: torch.Tensor  # [out_features, rank]
    scale: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self) -> torch.Tensor:
        """`scale * up @ down` in fp32."""
        return (self.up.float() @ self.down.float()) * self.scale


@dataclass
class FluxLora:
    """A LoRA file read and converted: its pieces by diffusers module name, in file order."""

    path: Path
    layout: str
    layers: dict[str, LoraPiece]
    ignored: list[str] = field(default_factory=list)  # keys for other models (text encoders)


def read_lora(path: Path) -> FluxLora:
    """Read a LoRA safetensors file in any layout above. Raises LoraError naming the file."""
    path = Path(path)
    raw, metadata = _read_safetensors(path)
    try:
        layout, layers, ignored = convert(raw, metadata)
    except LoraError as exc:
        raise LoraError(f"LoRA {path.name}: {exc}") from None
    if ignored:
        log.info("LoRA %s: %d keys for the text encoders are not applied", path.name, len(ignored))
    return FluxLora(path=path, layout=layout, layers=layers, ignored=ignored)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise LoraError(f"LoRA file {path} does not exist")
    try:  # a damaged file gets checkpoint.py's clear message
        raw = dict(read_tensors(path, skip=lambda key: False))
    except CheckpointError as exc:
        raise LoraError(f"LoRA {path.name}: {exc}") from None
    except KeyError as exc:
        raise LoraError(f"LoRA {path.name}: tensor type {exc} is not supported") from None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    return raw, metadata


def layout_of(keys) -> str:
    """The layout's name, by the same tests as FluxLoraLoaderMixin.lora_state_dict, in its order."""
    keys = list(keys)
    if any(".lora_down.weight" in k for k in keys):
        return "kohya"
    if any("processor" in k for k in keys):
        return "xlabs"
    if any("query_norm.scale" in k for k in keys):
        return "bfl-control"
    if any("base_model" in k for k in keys):
        return "fal-kontext"
    return "peft"


def convert(
    raw: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[str, dict[str, LoraPiece], list[str]]:
    """(layout, pieces by diffusers module name, ignored keys) for a LoRA state dict."""
    if not any("lora" in k or "processor" in k for k in raw):
        first = next(iter(raw), "none")
        raise LoraError(f"it is not a LoRA file (no LoRA weights; its first key is {first!r})")
    raw = _bfl_peft_as_kohya(_with_transformer_prefix(dict(raw)))
    layout = layout_of(raw)
    if layout == "bfl-control":
        raise LoraError(
            "this is a FLUX Control LoRA (Canny/Depth: it changes the model's input channels and "
            "needs a control image), which fluxloom does not support"
        )
    own = _pop_kohya_own(raw) if layout == "kohya" else {}
    state_dict, alphas = _diffusers_state_dict(raw) if raw else ({}, {})
    pieces, ignored = _group(state_dict, alphas or {}, _peft_config(metadata) if layout == "peft" else {})
    pieces.update(own)
    if not pieces:
        raise LoraError("it holds no LoRA layers for the FLUX transformer; is it a FLUX LoRA?")
    # An all-zero piece changes nothing: the zero parts of a fused layer (a LoRA on q alone,
    # written as qkv) need no branch on a quantized layer.
    return layout, {n: p for n, p in pieces.items() if p.up.any() and p.down.any()}, ignored


def _with_transformer_prefix(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT keys saved from the transformer alone lack the `transformer.` prefix."""
    if not any(k.startswith(TRANSFORMER_CHILDREN) for k in raw):
        return raw
    return {f"transformer.{k}" if k.startswith(TRANSFORMER_CHILDREN) else k: v for k, v in raw.items()}


def _bfl_peft_as_kohya(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BFL module names with PEFT suffixes (`diffusion_model.X.lora_A.weight`) are kohya's ComfyUI
    spelling (`diffusion_model.X.lora_down.weight`) under other names."""
    if not any(k.startswith("diffusion_model.") and ".lora_A." in k for k in raw):
        return raw
    return {k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up."): v for k, v in raw.items()}


def _diffusers_state_dict(raw: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict | None]:
    """diffusers' own detection and conversion, as FluxPipeline.load_lora_weights runs it."""
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin

    try:
        return FluxLoraLoaderMixin.lora_state_dict(raw, return_alphas=True)
    except (ValueError, KeyError, AssertionError, NotImplementedError, RuntimeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise LoraError(f"it is not a FLUX LoRA that diffusers can convert ({first})") from None


def _group(
    state_dict: dict[str, torch.Tensor], alphas: dict[str, torch.Tensor], config: dict
) -> tuple[dict[str, LoraPiece], list[str]]:
    """diffusers' `transformer.X.lora_A/B.weight` keys → {X: LoraPiece}; other models' keys aside."""
    downs: dict[str, torch.Tensor] = {}
    ups: dict[str, torch.Tensor] = {}
    ignored = []
    for key, tensor in state_dict.items():
        if key.startswith("text_encoder"):
            ignored.append(key)
            continue
        # diffusers' kohya converter leaves the embedders' and final layer's keys unprefixed
        # (its pipeline then drops them); kohya and ComfyUI apply them, and so do we.
        module, sep, part = key.removeprefix("transformer.").rpartition(".lora_")
        ours = key.startswith("transformer.") or key.startswith(TRANSFORMER_CHILDREN)
        if not ours or not sep or part not in ("A.weight", "B.weight"):
            raise LoraError(f"its key {key!r} is not a LoRA weight fluxloom can apply (DoRA, bias, norm)")
        (downs if part == "A.weight" else ups)[module] = tensor
    pieces = {}
    for module, down in downs.items():
        if module not in ups:
            raise LoraError(f"layer {module!r} has lora_A but no lora_B")
        rank = down.shape[0]
        alpha = alphas.get(f"transformer.{module}.alpha")
        pieces[module] = LoraPiece(down, ups[module], _scale(module, rank, alpha, config))
    return pieces, ignored


def _peft_config(metadata: dict[str, str]) -> dict:
    """diffusers' saved LoraConfig (`lora_adapter_metadata`), its `transformer.` prefix removed."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError:
        log.warning("LoRA metadata %s is not JSON; alpha taken as the rank", METADATA_KEY)
        return {}
    if any(k.startswith("transformer.") for k in config):
        config = {
            k.removeprefix("transformer."): v for k, v in config.items() if k.startswith("transformer.")
        }
    return config


def _scale(module: str, rank: int, alpha: torch.Tensor | None, config: dict) -> float:
    """alpha / rank, alpha from the module's `.alpha` key, else PEFT's config (its alpha_pattern
    matched as PEFT matches it, else lora_alpha), else the rank (scale 1)."""
    if alpha is not None:
        return float(alpha) / rank
    if not config.get("lora_alpha"):
        return 1.0
    value = config["lora_alpha"]
    for pattern, pattern_alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            value = pattern_alpha
            break
    return float(value) / (math.sqrt(rank) if config.get("use_rslora") else rank)


# --- the kohya pieces converted here --------------------------------------------------------


def _pop_kohya_own(raw: dict[str, torch.Tensor]) -> dict[str, LoraPiece]:
    """Take single blocks' linear1 and the final layer out of a kohya state dict, converted."""
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key in list(raw):
        if m := _LINEAR1.match(key):
            parts.setdefault(("linear1", m.group(1)), {})[m.group(2)] = raw.pop(key)
        elif m := _FINAL.match(key):
            parts.setdefault((m.group(1).replace(".", "_"), ""), {})[m.group(2)] = raw.pop(key)
    pieces: dict[str, LoraPiece] = {}
    for (kind, block), tensors in parts.items():
        piece = _kohya_piece(tensors, f"{kind} {block}".strip())
        if kind == "linear1":
            pieces.update(split_linear1(piece, int(block)))
        elif kind == "linear":
            pieces["proj_out"] = piece
        else:  # BFL's final modulation is (shift, scale); diffusers' norm_out is (scale, shift)
            pieces["norm_out.linear"] = LoraPiece(piece.down, _swap_halves(piece.up), piece.scale)
    return pieces


def _kohya_piece(tensors: dict[str, torch.Tensor], what: str) -> LoraPiece:
    if "lora_down.weight" not in tensors or "lora_up.weight" not in tensors:
        raise LoraError(f"kohya layer {what} lacks its lora_down or lora_up weight")
    down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
    rank = down.shape[0]
    alpha = float(tensors["alpha"]) if "alpha" in tensors else float(rank)
    return LoraPiece(down, up, alpha / rank)


def _swap_halves(up: torch.Tensor) -> torch.Tensor:
    first, second = up.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def split_linear1(piece: LoraPiece, block: int) -> dict[str, LoraPiece]:
    """A single block's fused linear1 (rows q | k | v | mlp; its input is the model width) split
    into diffusers' to_q, to_k, to_v, proj_mlp, as diffusers' converter splits it: when the up
    weight is block-diagonal (rank divisible by 4, each part using its own quarter of the rank),
    each part keeps its quarter; otherwise each part shares the whole down weight."""
    width, out = piece.down.shape[1], piece.up.shape[0]
    if out <= 3 * width:
        raise LoraError(
            f"single block {block}'s linear1 LoRA has {out} outputs for width {width}; "
            f"a FLUX single block has 3 x width + the MLP width"
        )
    dims = [width, width, width, out - 3 * width]
    prefix = f"single_transformer_blocks.{block}"
    names = [f"{prefix}.attn.to_q", f"{prefix}.attn.to_k", f"{prefix}.attn.to_v", f"{prefix}.proj_mlp"]
    ups = list(torch.split(piece.up, dims, dim=0))
    downs = [piece.down] * 4
    if _block_diagonal(piece.up, dims, parts=4):
        quarter = piece.rank // 4
        downs = list(torch.chunk(piece.down, 4, dim=0))
        ups = [u[:, j * quarter : (j + 1) * quarter].contiguous() for j, u in enumerate(ups)]
    return {name: LoraPiece(d, u, piece.scale) for name, d, u in zip(names, downs, ups, strict=True)}


def _block_diagonal(up: torch.Tensor, dims: list[int], parts: int) -> bool:
    rank = up.shape[1]
    if rank % parts:
        return False
    quarter, row = rank // parts, 0
    for j, rows in enumerate(dims):
        block = up[row : row + rows]
        others = torch.cat([block[:, : j * quarter], block[:, (j + 1) * quarter :]], dim=1)
        if others.any():
            return False
        row += rows
    return True
