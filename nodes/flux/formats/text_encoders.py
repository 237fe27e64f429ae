"""Single-file text encoders: CLIP-L and T5 in transformers' key layout, as ComfyUI keeps them in
`text_encoders/` (or `clip/`): `clip_l.safetensors`, `t5xxl_fp16.safetensors`,
`t5xxl_fp8_e4m3fn.safetensors`, `t5xxl_fp8_e4m3fn_scaled.safetensors`, also inside an
all-in-one checkpoint under a prefix such as `text_encoders.t5xxl.transformer.`.

Public API:
- `load_text_encoder_file(path, kind, quantization, dtype, device, prefix=None)` →
  `(module, tokenizer)`: a transformers `CLIPTextModel` ("CLIP") or `T5EncoderModel` ("T5") and
  the shipped tokenizer (nodes/flux/assets).
- `estimate_text_encoder_bytes(path, kind, quantization, dtype, prefix=None)`: its size once loaded.
- `infer_clip_config(shapes)` / `infer_t5_config(shapes)`: the config, from tensor shapes alone.
- `TextEncoderFileError`: the file is not a text encoder fluxloom can load (a `ModelSourceError`).

The config is read off the tensors (CLIP: width, layers, MLP, vocabulary, positions, and 64-wide
heads as CLIP-L's; T5: width, layers, feed-forward, heads and buckets from the relative attention
bias, d_kv = inner width / heads, gated-gelu when `wi_0`/`wi_1` exist), so that tiny test models
load through the same code as the real ones; what tensors cannot tell comes from the shipped
CLIP-L / T5-XXL configs. Loading streams: the model is built without weights, then each tensor is
read alone (plain reads, no memory map) and each Linear weight is quantized as it comes, so an int8
T5's peak is its int8 size plus one full-precision layer.

Weights follow what transformers' `from_pretrained` gives for the same choice, so a single file
and a diffusers folder give the same module: T5's `wo` layers stay in fp32 under fp16 and are not
quantized by bitsandbytes (transformers' `_keep_in_fp32_modules`). fp8 weights (`float8_e4m3fn`,
`float8_e5m2`; scaled fp8 with a per-tensor `scale_weight`) stay 8-bit with quantization "none"
(`formats.fp8.fp8_linear`, cast per layer at compute), and are upcast (and scaled) before any other
quantization. T5's `wo` is upcast too, since T5 casts its input to `wo`'s weight dtype.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes.flux import assets, offline
from nodes.flux import quantization as q
from nodes.flux.checkpoint import CheckpointError, ModelSourceError, read_header, tensor_at

log = logging.getLogger("fluxloom.models")

KINDS = ("CLIP", "T5")
FP8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
DTYPE_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CLIP_HEAD_DIM = 64  # CLIP-L: 768 wide, 12 heads

# Where each kind's keys start: the prefix of a file is what comes before these.
CLIP_ANCHOR = "embeddings.token_embedding.weight"  # under text_model.
T5_ANCHOR = "block.0.layer.0.SelfAttention.q.weight"  # under encoder.


class TextEncoderFileError(ModelSourceError):
    """A file is not a CLIP-L / T5 text encoder that fluxloom can load; the message says why."""


# --- the file, seen through its prefix -----------------------------------------------------


@dataclass
class EncoderFile:
    """A safetensors file's header (or the merged headers of a folder's shards, as a diffusers
    pipeline's `text_encoder_2/` holds T5-XXL), with the model's keys (as transformers names
    them) mapped to the file's keys."""

    path: Path  # the file, or the folder of shards
    kind: str
    header: dict[str, Any]  # file key → info; a shard's info carries its index in "shard"
    bases: list[int]  # where each shard's data starts
    keys: dict[str, str]  # model key → file key
    scales: dict[str, str]  # model weight key → file key of its scale_weight
    shards: list[Path] = field(default_factory=list)
    _storages: dict[int, Any] = field(default_factory=dict, repr=False)

    def shape(self, key: str) -> list[int]:
        return self.header[self.keys[key]]["shape"]

    def stored(self, key: str) -> str:
        return self.header[self.keys[key]]["dtype"]

    def read(self, handles: dict[int, Any], key: str) -> torch.Tensor:
        info = self.header[key]
        shard = info.get("shard", 0)
        return _read(handles[shard], self.bases[shard], info)

    def mapped(self, key: str) -> torch.Tensor | None:
        """A tensor backed by a private (copy-on-write) memory map of its file, as safetensors and
        transformers load them: its pages are read when touched, so an embedding costs only the
        rows a prompt uses. None when its dtype has no torch name here or it is not aligned."""
        info = self.header[key]
        dtype = FLOATS.get(info["dtype"])
        if dtype is None:
            return None
        shard = info.get("shard", 0)
        start = self.bases[shard] + info["data_offsets"][0]
        item = torch.empty((), dtype=dtype).element_size()
        if start % item:
            return None
        storage = self._storages.get(shard)
        if storage is None:
            path = self.shards[shard]
            storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
            self._storages[shard] = storage
        shape = info["shape"]
        return torch.empty(0, dtype=dtype).set_(storage, start // item, shape, _contiguous_strides(shape))

    @contextlib.contextmanager
    def opened(self):
        """Open handles on every shard, for read()."""
        with contextlib.ExitStack() as stack:
            yield {i: stack.enter_context(open(p, "rb")) for i, p in enumerate(self.shards)}


def _contiguous_strides(shape: list[int]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return list(reversed(strides))


def _read(fh, base: int, info: dict[str, Any]) -> torch.Tensor:
    """One tensor; fp8 ones too (checkpoint.DTYPES has no fp8 names: read the bytes, then view)."""
    if info["dtype"] in FP8:
        start, end = info["data_offsets"]
        raw = tensor_at(fh, base, {**info, "dtype": "U8", "shape": [end - start]})
        return raw.view(FP8[info["dtype"]]).reshape(info["shape"])
    return tensor_at(fh, base, info)


def open_encoder_file(path: Path | str, kind: str, prefix: str | None = None) -> EncoderFile:
    """Read the header of `path` and map its keys for `kind` ("CLIP" or "T5"). Without `prefix`,
    the prefix is found from the file's keys; a file with several encoders of that kind (an
    all-in-one checkpoint) needs it."""
    path = Path(path)
    if kind not in KINDS:
        raise TextEncoderFileError(f"unknown text encoder kind {kind!r}; choose one of: {', '.join(KINDS)}")
    shards = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not shards:
        raise TextEncoderFileError(f"{path} holds no .safetensors file")
    header: dict[str, Any] = {}
    bases: list[int] = []
    for index, shard in enumerate(shards):
        try:
            shard_header, base = read_header(shard)
        except CheckpointError as exc:
            raise TextEncoderFileError(str(exc)) from exc
        header.update({key: {**info, "shard": index} for key, info in shard_header.items()})
        bases.append(base)
    if prefix is None:
        prefix = find_prefix(header, kind, path)
    mapper = _clip_key if kind == "CLIP" else _t5_key
    keys: dict[str, str] = {}
    scales: dict[str, str] = {}
    for file_key in header:
        if not file_key.startswith(prefix):
            continue
        rest = file_key[len(prefix) :]
        if rest.endswith(".scale_weight"):
            target = mapper(rest.removesuffix(".scale_weight") + ".weight")
            if target:
                scales[target] = file_key
            continue
        target = mapper(rest)
        if target and target not in keys:
            keys[target] = file_key
    if kind == "T5" and "shared.weight" not in keys and "encoder.embed_tokens.weight" in keys:
        keys["shared.weight"] = keys["encoder.embed_tokens.weight"]
    keys.pop("encoder.embed_tokens.weight", None)  # the same tensor as shared.weight
    return EncoderFile(path, kind, header, bases, keys, scales, shards)


def find_prefix(header: dict[str, Any], kind: str, path: Path) -> str:
    """The key prefix under which `kind`'s transformers layout starts in this file."""
    anchor, level = (CLIP_ANCHOR, "text_model.") if kind == "CLIP" else (T5_ANCHOR, "encoder.")
    found = []
    for key in header:
        head = key.removesuffix(anchor)
        if head == key or not (head == "" or head.endswith(".")):
            continue
        if head.endswith(level):
            found.append(head.removesuffix(level))
        elif kind == "CLIP":  # a CLIPTextTransformer saved alone: embeddings.*, encoder.*
            found.append(head)
    what = "a CLIP text encoder" if kind == "CLIP" else "a T5 encoder"
    if not found:
        raise TextEncoderFileError(
            f"{path} is not {what} in transformers' key layout: it has no key ending in '{level}{anchor}'"
        )
    if len(found) > 1:
        raise TextEncoderFileError(
            f"{path} holds several {kind} encoders (key prefixes {', '.join(repr(p) for p in found)}); "
            "say which one with prefix="
        )
    return found[0]


def _clip_key(rest: str) -> str | None:
    """transformers' CLIPTextModel key for a key below the prefix. transformers 5's CLIPTextModel
    holds embeddings/encoder/final_layer_norm itself; files name them under `text_model.`.
    text_projection, logit_scale and position_ids (CLIPTextModel builds it) give None."""
    rest = rest.removeprefix("text_model.")
    if rest.endswith("position_ids") or not rest.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
        return None
    return rest


def _t5_key(rest: str) -> str | None:
    if rest == "shared.weight" or (rest.startswith("encoder.") and not rest.endswith("scaled_fp8")):
        return rest
    return None  # decoder.*, lm_head, the scaled_fp8 marker


# --- configs from shapes --------------------------------------------------------------------


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_clip_config(shapes: dict[str, list[int]], where: str = "the file"):
    """CLIPTextConfig from `{model key: shape}`; heads are 64 wide, as CLIP-L's."""
    from transformers import CLIPTextConfig

    vocab, hidden = _need(shapes, "embeddings.token_embedding.weight", where)
    positions = _need(shapes, "embeddings.position_embedding.weight", where)[0]
    layers = _count(shapes, r"encoder\.layers\.(\d+)\.")
    intermediate = _need(shapes, "encoder.layers.0.mlp.fc1.weight", where)[0]
    if hidden % CLIP_HEAD_DIM:
        raise TextEncoderFileError(
            f"{where}: CLIP width {hidden} is not a multiple of {CLIP_HEAD_DIM} (CLIP-L's head size), "
            "so its number of attention heads cannot be known"
        )
    base = assets.config("clip-l")
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // CLIP_HEAD_DIM,
        max_position_embeddings=positions,
        projection_dim=hidden,
        hidden_act=base["hidden_act"],
        layer_norm_eps=base["layer_norm_eps"],
        bos_token_id=base["bos_token_id"],
        eos_token_id=base["eos_token_id"],
        pad_token_id=base["pad_token_id"],
    )


def infer_t5_config(shapes: dict[str, list[int]], where: str = "the file"):
    """T5Config (encoder only) from `{model key: shape}`."""
    from transformers import T5Config

    vocab, d_model = _need(shapes, "shared.weight", where)
    layers = _count(shapes, r"encoder\.block\.(\d+)\.")
    buckets, heads = _need(
        shapes, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", where
    )
    inner = _need(shapes, "encoder.block.0.layer.0.SelfAttention.q.weight", where)[0]
    ff = "encoder.block.0.layer.1.DenseReluDense."
    gated = ff + "wi_0.weight" in shapes
    d_ff = _need(shapes, ff + ("wi_0.weight" if gated else "wi.weight"), where)[0]
    if inner % heads:
        raise TextEncoderFileError(
            f"{where}: T5 attention width {inner} is not a multiple of its {heads} heads"
        )
    base = assets.config("t5-xxl")
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        d_ff=d_ff,
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=base["relative_attention_max_distance"],
        feed_forward_proj="gated-gelu" if gated else "relu",
        layer_norm_epsilon=base["layer_norm_epsilon"],
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=base["pad_token_id"],
        eos_token_id=base["eos_token_id"],
        decoder_start_token_id=base["decoder_start_token_id"],
    )


def _need(shapes: dict[str, list[int]], key: str, where: str) -> list[int]:
    if key not in shapes:
        raise TextEncoderFileError(f"{where} has no tensor for {key!r}; is it a complete text encoder file?")
    return shapes[key]


# --- dtype and size -------------------------------------------------------------------------


def resolve_dtype(choice: str | torch.dtype, file: EncoderFile, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA (fp16 where bf16 is not supported); on the CPU the dtype most weights
    are stored in, so that nothing is converted, and bf16 for an fp8 file."""
    if isinstance(choice, torch.dtype):
        return choice
    if choice in DTYPE_CHOICES:
        return DTYPE_CHOICES[choice]
    if choice != "auto":
        raise TextEncoderFileError(
            f"unknown dtype {choice!r}; choose one of: auto, {', '.join(DTYPE_CHOICES)}"
        )
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    counts = Counter(file.stored(k) for k in file.keys if len(file.shape(k)) == 2)
    main = counts.most_common(1)[0][0] if counts else "F32"
    return FLOATS.get(main, torch.bfloat16)


def estimate_text_encoder_bytes(
    path: Path | str, kind: str, quantization: str, dtype: torch.dtype, prefix: str | None = None
) -> int:
    """What the encoder will take once loaded: Linear weights at 1 byte a value for int8, half a
    byte for nf4, 1 byte when fp8 stays fp8 ("none"); everything else at `dtype`."""
    file = open_encoder_file(path, kind, prefix)
    per_value = q.BYTES_PER_WEIGHT.get(quantization)
    item = torch.empty((), dtype=dtype).element_size()
    total = 0.0
    for key in file.keys:
        numel = 1
        for d in file.shape(key):
            numel *= d
        linear = len(file.shape(key)) == 2 and _is_linear_key(key)
        if linear and per_value is not None:
            total += numel * per_value
        elif linear and file.stored(key) in FP8 and quantization == q.NONE:
            total += numel
        else:
            total += numel * item
    return int(total)


def _is_linear_key(key: str) -> bool:
    return key.endswith(".weight") and not any(
        part in key for part in ("embedding", "shared", "layer_norm", "relative_attention_bias")
    )


# --- loading --------------------------------------------------------------------------------


def load_text_encoder_file(
    path: Path | str,
    kind: str,
    quantization: str = q.NONE,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    prefix: str | None = None,
    config: Any = None,
) -> tuple[torch.nn.Module, Any]:
    """Load a CLIP-L ("CLIP") or T5 ("T5") single file (or a folder of shards) onto `device`
    with `quantization` (one of nodes/flux/quantization.py's choices; CLIP takes only "none");
    returns (module in eval mode, the shipped tokenizer). `config`: the model's own config
    (a pipeline folder's), instead of the one inferred from the tensors."""
    offline.enforce()
    device = torch.device(device)
    file = open_encoder_file(path, kind, prefix)
    _check_quantization(kind, quantization)
    compute = resolve_dtype(dtype, file, device)
    shapes = {k: file.shape(k) for k in file.keys}
    if config is None:
        config = (
            infer_clip_config(shapes, str(file.path))
            if kind == "CLIP"
            else infer_t5_config(shapes, str(file.path))
        )
    tokenizer = _tokenizer(kind, config, file.path)
    model = _build_empty(kind, config)
    try:
        counts = _stream(model, file, quantization, compute, device)
    except (CheckpointError, q.QuantizationError, TextEncoderFileError):
        raise
    except Exception as exc:
        raise q.QuantizationError(
            f"loading {file.path} as {kind} with {quantization!r} on {device.type} failed: {exc}"
        ) from exc
    if kind == "T5":
        model.set_input_embeddings(model.shared)  # encoder.embed_tokens is shared.weight
    _check_complete(model, file)
    log.info("%s from %s: %s", kind, file.path.name, ", ".join(f"{n} {w}" for w, n in sorted(counts.items())))
    return model.eval(), tokenizer


def _check_quantization(kind: str, quantization: str) -> None:
    q.check_choice(quantization)
    if kind == "CLIP" and quantization != q.NONE:
        raise q.QuantizationError("CLIP is not quantized by fluxloom; use quantization 'none'")
    if quantization in q.BNB_CHOICES:
        q.require_package("bitsandbytes", quantization)
    elif quantization == q.INT8_TORCHAO:
        q.require_package("torchao", quantization)


def _tokenizer(kind: str, config, path: Path):
    tokenizer = assets.clip_tokenizer() if kind == "CLIP" else assets.t5_tokenizer()
    if config.vocab_size < len(tokenizer):
        raise TextEncoderFileError(
            f"{path}: its vocabulary has {config.vocab_size} rows, fewer than the {len(tokenizer)} "
            f"tokens of the {'CLIP-L' if kind == 'CLIP' else 'T5'} tokenizer fluxloom ships; "
            "it is not a FLUX text encoder"
        )
    return tokenizer


def _build_empty(kind: str, config) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from transformers import CLIPTextModel, T5EncoderModel

    # Parameters on the meta device; buffers (CLIP's position_ids) stay real.
    with init_empty_weights():
        return (CLIPTextModel if kind == "CLIP" else T5EncoderModel)(config)


def _stream(
    model: torch.nn.Module, file: EncoderFile, quantization: str, compute: torch.dtype, device: torch.device
) -> Counter:
    """Put every tensor of `file` into `model`, one at a time; returns what each Linear became."""
    linears = {n: m for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    counts: Counter = Counter()
    with file.opened() as fh:
        for name, linear in linears.items():
            if name + ".weight" not in file.keys:
                continue  # reported by _check_complete
            layer, what = _linear(file, fh, name, linear, quantization, compute, device)
            q.set_submodule(model, name, layer)
            counts[what] += 1
            _give_back_freed_memory()
        done = {n + suffix for n in linears for suffix in (".weight", ".bias")}
        for key, file_key in file.keys.items():
            if key not in done:
                _assign(model, key, _whole(file, fh, file_key, compute, device), compute, device, file.path)
    return counts


def _give_back_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim): the full-precision
    weight and the temporaries of quantizing one layer are freed, but glibc keeps such
    layer-sized blocks in its heap (its mmap threshold grows with every large free), and without
    this the peak of a streamed, quantized load creeps up to the size of the whole file."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows, musl): nothing to do
        return None


_LIBC = _load_libc()


def _keep_dtype(name: str, compute: torch.dtype) -> torch.dtype:
    """T5's `wo` stays fp32 under fp16 (transformers' _keep_in_fp32_modules, for fp16 overflow)."""
    return torch.float32 if name.endswith("DenseReluDense.wo") and compute == torch.float16 else compute


def _linear(
    file: EncoderFile,
    fh,
    name: str,
    linear: torch.nn.Linear,
    quantization: str,
    compute: torch.dtype,
    device: torch.device,
) -> tuple[torch.nn.Module, str]:
    weight_key = file.keys[name + ".weight"]
    if list(file.shape(name + ".weight")) != [linear.out_features, linear.in_features]:
        raise TextEncoderFileError(
            f"{file.path}: {name}.weight has shape {list(file.shape(name + '.weight'))}, the model expects "
            f"{[linear.out_features, linear.in_features]}"
        )
    bias_key = file.keys.get(name + ".bias")
    bias = None if bias_key is None else file.read(fh, bias_key).to(compute)
    scale_key = file.scales.get(name + ".weight")
    scale = None if scale_key is None else file.read(fh, scale_key).float()
    is_wo = name.endswith("DenseReluDense.wo")
    fp8 = file.stored(name + ".weight") in FP8
    if fp8 and quantization == q.NONE and not is_wo:
        from nodes.flux.formats.fp8 import fp8_linear

        return fp8_linear(file.read(fh, weight_key).to(device), scale, bias, compute), "fp8"
    keep = _keep_dtype(name, compute)
    quantize = quantization != q.NONE and not (is_wo and quantization in q.BNB_CHOICES)
    if not quantize and scale is None:  # kept as stored: memory-mapped where it can be
        return _plain_linear(_whole(file, fh, weight_key, keep, device).to(keep), bias, device), _name(keep)
    value = _upcast(file.read(fh, weight_key), scale, keep)
    if quantize:
        layer = q.quantized_linear(
            linear.in_features, linear.out_features, value, bias, quantization, compute, device
        )
        if layer is not None:
            return layer, quantization
    return _plain_linear(value, bias, device), _name(keep)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _whole(file: EncoderFile, fh, file_key: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor kept as stored: memory-mapped when it stays on the CPU in its stored dtype (no
    copy; pages read when used), else read."""
    if device.type == "cpu":
        mapped = file.mapped(file_key)
        if mapped is not None and mapped.dtype == dtype:
            return mapped
    return file.read(fh, file_key)


def _upcast(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    value = weight.to(dtype)
    return value if scale is None else value * scale.to(dtype)


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None, device: torch.device) -> torch.nn.Linear:
    # Parameters require grad, as from_pretrained leaves them: torch's batched Linear takes a
    # different (not bit-identical) path without it, and a folder and a file must give equal output.
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = torch.nn.Parameter(weight.to(device))
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias.to(device))
    return layer


def _assign(
    model: torch.nn.Module, key: str, tensor: torch.Tensor, compute: torch.dtype, device: torch.device, path
) -> None:
    module_name, _, name = key.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        log.debug("%s: key %s has no place in the model; skipped", path, key)
        return
    if tensor.dtype in FP8.values() or tensor.is_floating_point():
        tensor = tensor.to(compute)
    value = tensor.to(device)
    if name in module._parameters:
        old = module._parameters[name]
        if old is not None and list(old.shape) != list(value.shape):
            raise TextEncoderFileError(
                f"{path}: {key} has shape {list(value.shape)}, the model expects {list(old.shape)}"
            )
        module._parameters[name] = torch.nn.Parameter(value)
    elif name in module._buffers:
        module._buffers[name] = value
    else:
        log.debug("%s: key %s has no place in the model; skipped", path, key)


def _check_complete(model: torch.nn.Module, file: EncoderFile) -> None:
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    missing += [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and m.weight.is_meta]
    if missing:
        raise TextEncoderFileError(
            f"{file.path} has no values for {', '.join(sorted(set(missing))[:5])}; is the file complete?"
        )
