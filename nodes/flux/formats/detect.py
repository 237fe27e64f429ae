"""What a model file is, by content: read from its header (safetensors) or tensor table (GGUF)
alone, never its tensors, so that a folder of 20 GB files is classified in milliseconds.

Public API:
- `detect_file(path) -> Detected | None`: None for anything fluxloom does not offer (an SDXL
  checkpoint, an SD1.5 VAE with 4 latent channels, a CLIP-G, a pickle, a random file).
  Results are cached by (path, size, mtime), so listing a big folder again reads nothing.
- `Detected`: `kind` (one of `KINDS`), `layout`, `prefix` of its keys, `parts` (what an
  all-in-one checkpoint holds), `dtype` (the main stored type of its weights: "BF16", "F8_E4M3",
  "Q8_0", ...), `scaled_fp8`, `guidance` (a FLUX transformer with a guidance embedding: dev-like).

What is recognised (ComfyUI's folders hold all of these):
- FLUX_MODEL: a FLUX.1 transformer in BFL's layout (`double_blocks.0.img_attn.qkv.weight`,
  `single_blocks.…`, `img_in` taking 64 = 16×2×2 channels, `vector_in` for CLIP's pooled
  output), bare or under `model.diffusion_model.` / `diffusion_model.`; in diffusers' layout
  (`transformer_blocks.0.attn.to_q.weight` + `single_transformer_blocks.…`); or a GGUF file with
  BFL's names. (FLUX.1 Fill/Depth/Canny, FLUX.2 and Chroma differ in `img_in` / `vector_in`.)
- CHECKPOINT: a FLUX transformer under `model.diffusion_model.` together with at least one other
  part: CLIP-L (`text_encoders.clip_l.`), T5 (`text_encoders.t5xxl.`), VAE (`vae.` or
  `first_stage_model.`). A file with the transformer alone under that prefix is a FLUX_MODEL.
- CLIP: a CLIP text encoder in transformers' layout, CLIP-L's 49,408-token vocabulary, at most
  CLIP-L's width 768 (CLIP-G is 1280, CLIP-H 1024).
- T5: a T5 v1.1 encoder (gated feed-forward, relative attention bias) with T5's 32,128 rows.
- VAE: an autoencoder with 16 latent channels (`encoder.conv_out` gives 2×16 moments,
  `decoder.conv_in` takes 16), in BFL's/LDM's layout ("bfl") or diffusers' ("diffusers"). SD3's
  VAE has the same shape and is offered too; SD1.5/SDXL's (4 channels) are not.
- LORA: a FLUX LoRA: kohya (`lora_unet_double_blocks_…`, `lora_transformer_single_transformer_…`),
  diffusers/PEFT (`…single_transformer_blocks….lora_A.weight`), xlabs (`double_blocks.0.processor
  .proj_lora1.down.weight`) or BFL/ComfyUI (`double_blocks.0.img_attn.qkv.lora_A.weight`); its
  `layout` is lora_formats.layout_of's name ("kohya", "peft", "xlabs", ...).
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nodes.flux.checkpoint import read_header

log = logging.getLogger("fluxloom.models")

KINDS = ("FLUX_MODEL", "CHECKPOINT", "CLIP", "T5", "VAE", "LORA")
SUFFIXES = (".safetensors", ".sft", ".gguf")

CLIP_VOCAB = 49408
CLIP_L_WIDTH = 768
T5_VOCAB = 32128
LATENT_CHANNELS = 16
FLUX_IN_CHANNELS = 64  # 16 latent channels packed 2x2

TRANSFORMER_PREFIXES = ("", "model.diffusion_model.", "diffusion_model.", "transformer.")
VAE_PREFIXES = ("", "vae.", "first_stage_model.")
CHECKPOINT_PREFIX = "model.diffusion_model."
CHECKPOINT_PARTS = {
    "CLIP": ("text_encoders.clip_l.",),
    "T5": ("text_encoders.t5xxl.",),
    "VAE": ("vae.", "first_stage_model."),
}


@dataclass(frozen=True)
class Detected:
    kind: str
    layout: str  # "bfl", "diffusers", "gguf", "transformers", "kohya", "peft", "xlabs"
    prefix: str = ""
    parts: tuple[str, ...] = ()
    dtype: str = ""
    scaled_fp8: bool = False
    guidance: bool | None = None


@dataclass(frozen=True)
class _Table:
    """A file's tensor names, shapes ([out, in, ...] as torch has them) and stored types."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    gguf: bool = False

    def shape(self, key: str) -> tuple[int, ...] | None:
        return self.shapes.get(key)

    def main_dtype(self, prefix: str = "") -> str:
        counts = Counter(
            self.dtypes[k] for k, s in self.shapes.items() if k.startswith(prefix) and len(s) >= 2
        )
        return counts.most_common(1)[0][0] if counts else ""


def detect_file(path: Path | str) -> Detected | None:
    """What `path` holds, or None when fluxloom offers nothing for it (see the module doc)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return _detect_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8192)
def _detect_cached(path: str, size: int, mtime_ns: int) -> Detected | None:
    try:
        table = read_table(Path(path))
    except Exception as exc:  # a damaged or foreign file: not offered, and said why in the log
        log.warning("%s is not a readable model file (%s); not offered", path, exc)
        return None
    return classify(table)


def clear_cache() -> None:
    _detect_cached.cache_clear()


def read_table(path: Path) -> _Table:
    if path.suffix.lower() == ".gguf":
        return _gguf_table(path)
    header, _ = read_header(path)  # CheckpointError for a damaged file
    return _Table(
        {k: tuple(v["shape"]) for k, v in header.items()},
        {k: v["dtype"] for k, v in header.items()},
    )


def _gguf_table(path: Path) -> _Table:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    shapes, dtypes = {}, {}
    for t in reader.tensors:
        # GGUF lists dimensions innermost first: [in, out] for a Linear weight.
        shapes[t.name] = tuple(int(d) for d in reversed(t.shape.tolist()))
        dtypes[t.name] = t.tensor_type.name
    return _Table(shapes, dtypes, gguf=True)


# --- classification -------------------------------------------------------------------------


def classify(table: _Table) -> Detected | None:
    keys = table.shapes
    if _has_lora_keys(keys):
        return _lora(keys)
    for check in (_bfl_transformer, _diffusers_transformer, _clip, _t5, _vae):
        found = check(table)
        if found is not None:
            return found
    return None


def _transformer_prefix(table: _Table, entry: str, markers: tuple[str, ...]) -> str | None:
    """The first transformer prefix under which `entry` is a Linear taking FLUX's packed input
    channels and every marker key exists (one layout's fingerprint)."""
    for prefix in TRANSFORMER_PREFIXES:
        shape = table.shape(prefix + entry)
        if (
            shape is not None
            and len(shape) == 2
            and shape[1] == FLUX_IN_CHANNELS
            and all(prefix + marker in table.shapes for marker in markers)
        ):
            return prefix
    return None


def _bfl_transformer(table: _Table) -> Detected | None:
    markers = (
        "double_blocks.0.img_attn.qkv.weight",
        "single_blocks.0.linear1.weight",
        "vector_in.in_layer.weight",
    )
    prefix = _transformer_prefix(table, "img_in.weight", markers)
    if prefix is None:
        return None
    parts = _checkpoint_parts(table) if prefix == CHECKPOINT_PREFIX else ()
    return Detected(
        kind="CHECKPOINT" if parts else "FLUX_MODEL",
        layout="gguf" if table.gguf else "bfl",
        prefix=prefix,
        parts=("FLUX_MODEL", *parts) if parts else (),
        dtype=table.main_dtype(prefix),
        scaled_fp8=prefix + "scaled_fp8" in table.shapes,
        guidance=prefix + "guidance_in.in_layer.weight" in table.shapes,
    )


def _diffusers_transformer(table: _Table) -> Detected | None:
    markers = (
        "transformer_blocks.0.attn.to_q.weight",
        "single_transformer_blocks.0.attn.to_q.weight",
        "time_text_embed.text_embedder.linear_1.weight",
    )
    prefix = _transformer_prefix(table, "x_embedder.weight", markers)
    if prefix is None:
        return None
    return Detected(
        kind="FLUX_MODEL",
        layout="diffusers",
        prefix=prefix,
        dtype=table.main_dtype(prefix),
        scaled_fp8=prefix + "scaled_fp8" in table.shapes,
        guidance=prefix + "time_text_embed.guidance_embedder.linear_1.weight" in table.shapes,
    )


def _checkpoint_parts(table: _Table) -> tuple[str, ...]:
    parts = []
    for kind, prefixes in CHECKPOINT_PARTS.items():
        for prefix in prefixes:
            sub = _Table(
                {k[len(prefix) :]: s for k, s in table.shapes.items() if k.startswith(prefix)},
                {k[len(prefix) :]: d for k, d in table.dtypes.items() if k.startswith(prefix)},
            )
            found = {"CLIP": _clip, "T5": _t5, "VAE": _vae}[kind](sub) if sub.shapes else None
            if found is not None:
                parts.append(kind)
                break
    return tuple(parts)


def _other_diffusion_model(table: _Table) -> bool:
    """An SD1.5/SDXL/SD3 checkpoint: a diffusion model we do not run (its CLIP-L and VAE are
    not offered out of it)."""
    return any(k.startswith(CHECKPOINT_PREFIX) for k in table.shapes)


def _clip(table: _Table) -> Detected | None:
    if _other_diffusion_model(table):
        return None
    heads = [k.removesuffix("embeddings.token_embedding.weight") for k in table.shapes]
    heads = [h for h, k in zip(heads, table.shapes, strict=True) if h != k and (h == "" or h.endswith("."))]
    if len(heads) != 1:
        return None
    head = heads[0]
    vocab_width = table.shape(head + "embeddings.token_embedding.weight")
    if vocab_width is None or len(vocab_width) != 2:
        return None
    vocab, width = vocab_width
    if (
        vocab != CLIP_VOCAB
        or width > CLIP_L_WIDTH
        or head + "encoder.layers.0.mlp.fc1.weight" not in table.shapes
    ):
        return None
    prefix = head.removesuffix("text_model.")
    return Detected(kind="CLIP", layout="transformers", prefix=prefix, dtype=table.main_dtype(prefix))


def _t5(table: _Table) -> Detected | None:
    if _other_diffusion_model(table):
        return None
    anchor = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    prefixes = [k.removesuffix(anchor) for k in table.shapes if k.endswith(anchor)]
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if len(prefixes) != 1:
        return None
    prefix = prefixes[0]
    embedding = table.shape(prefix + "shared.weight") or table.shape(prefix + "encoder.embed_tokens.weight")
    gated = prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in table.shapes
    if embedding is None or embedding[0] != T5_VOCAB or not gated:
        return None
    return Detected(
        kind="T5",
        layout="transformers",
        prefix=prefix,
        dtype=table.main_dtype(prefix),
        scaled_fp8=prefix + "scaled_fp8" in table.shapes,
    )


def _vae(table: _Table) -> Detected | None:
    for prefix in VAE_PREFIXES:
        conv_out = table.shape(prefix + "encoder.conv_out.weight")
        conv_in = table.shape(prefix + "decoder.conv_in.weight")
        if conv_out is None or conv_in is None or len(conv_out) != 4 or len(conv_in) != 4:
            continue
        if conv_out[0] != 2 * LATENT_CHANNELS or conv_in[1] != LATENT_CHANNELS:
            return None  # a 4-channel (SD1.5/SDXL) VAE
        if prefix == "" and _other_diffusion_model(table):
            return None
        layout = (
            "diffusers" if prefix + "encoder.down_blocks.0.resnets.0.conv1.weight" in table.shapes else "bfl"
        )
        return Detected(kind="VAE", layout=layout, prefix=prefix, dtype=table.main_dtype(prefix))
    return None


# --- LoRA -----------------------------------------------------------------------------------

_LORA_MARKERS = (
    ".lora_A.",
    ".lora_B.",
    ".lora_down.",
    ".lora_up.",
    ".lora.down.",
    ".lora.up.",
    "_lora1.",
    "_lora2.",
)
_XLABS = re.compile(r"(^|\.)double_blocks\.\d+\.processor\.(proj|qkv)_lora\d\.")


def _has_lora_keys(keys) -> bool:
    return any(m in k for k in keys for m in _LORA_MARKERS) or any(k.startswith("lora_") for k in keys)


def _lora(keys) -> Detected | None:
    """A FLUX LoRA (layout named by lora_formats.layout_of, as the LoRA loader reads it), or
    None for a LoRA of another model (SDXL's `lora_unet_input_blocks`, SD3's transformer without
    single blocks, ...)."""
    from nodes.flux.lora_formats import layout_of

    flux = (
        any(k.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) for k in keys)
        or any(k.startswith("lora_transformer_single_transformer_blocks_") for k in keys)
        or any(_XLABS.search(k) for k in keys)
        or any(
            re.search(r"(^|\.)(double_blocks|single_blocks|single_transformer_blocks)\.\d+\.", k)
            for k in keys
        )
    )
    return Detected(kind="LORA", layout=layout_of(keys)) if flux else None
