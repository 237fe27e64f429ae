"""Where FLUX models come from: finding them under the models folder, and loading one part of
one model onto a device with a dtype and a quantization.

The models folder is laid out as ComfyUI's (`diffusers/`, `diffusion_models/`, `text_encoders/`,
`vae/`). A diffusers pipeline folder `diffusers/NAME/` (with `model_index.json`, such as a
FLUX.1-dev snapshot) is offered as NAME by every loader, and each loader reads its own subfolder
with `subfolder=`, as diffusers' FluxPipeline does. Single-file checkpoints in the other folders
are found by nodes/flux/catalog.py and loaded by nodes/flux/formats.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.flux import quantization as q
from nodes.flux.checkpoint import CheckpointError, ModelSourceError, read_header

log = logging.getLogger("fluxloom.models")

DIFFUSERS_DIR = "diffusers"
COMFY_DIRS = ("diffusers", "diffusion_models", "text_encoders", "vae")


@dataclass(frozen=True)
class Part:
    """One component of a FLUX pipeline folder."""

    kind: str  # the socket type a loader outputs
    subfolder: str
    tokenizer: str | None
    quantizable: bool


PARTS = {
    "CLIP": Part("CLIP", "text_encoder", "tokenizer", False),
    "T5": Part("T5", "text_encoder_2", "tokenizer_2", True),
    "FLUX_MODEL": Part("FLUX_MODEL", "transformer", None, True),
    "VAE": Part("VAE", "vae", None, False),
}

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


# --- discovery ------------------------------------------------------------------------------


def _read_index(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_flux_pipeline(folder: Path) -> bool:
    index = _read_index(folder)
    if not isinstance(index, dict):
        return False
    transformer = index.get("transformer")
    cls = transformer[1] if isinstance(transformer, list) and len(transformer) == 2 else ""
    return str(index.get("_class_name", "")).startswith("Flux") or cls == "FluxTransformer2DModel"


def find_pipelines(models_dir: Path | str) -> dict[str, Path]:
    """FLUX pipeline folders under MODELS/diffusers/, by name, sorted."""
    root = Path(models_dir) / DIFFUSERS_DIR
    if not root.is_dir():
        return {}
    found = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and is_flux_pipeline(folder):
            found[folder.name] = folder
    return found


# --- sizes and dtypes, read from safetensors headers without loading ------------------------


def _headers(folder: Path) -> list[dict[str, Any]]:
    try:
        return [read_header(f)[0] for f in sorted(folder.glob("*.safetensors"))]
    except CheckpointError as exc:
        raise ModelSourceError(str(exc)) from exc


def stored_dtype(folder: Path) -> torch.dtype:
    """The floating dtype most of a component's weights are stored in (fp32 when unknown)."""
    counts: Counter = Counter()
    for header in _headers(folder):
        for info in header.values():
            if info["dtype"] in _SAFETENSORS_DTYPES:
                counts[info["dtype"]] += 1
    return _SAFETENSORS_DTYPES[counts.most_common(1)[0][0]] if counts else torch.float32


def estimate_bytes(folder: Path, dtype: torch.dtype, quantization: str) -> int:
    """What a component will take once loaded: its tensors at `dtype`, with the 2-D weights of
    quantized layers at 1 byte (int8) or half a byte (nf4) per value. Used to make room on the
    device before loading; the real size is measured after."""
    per_value = q.BYTES_PER_WEIGHT.get(quantization)
    item = torch.empty((), dtype=dtype).element_size()
    total = 0.0
    for header in _headers(folder):
        for key, info in header.items():
            numel = 1
            for d in info["shape"]:
                numel *= d
            floating = info["dtype"] in _SAFETENSORS_DTYPES
            if per_value is not None and floating and len(info["shape"]) == 2 and key.endswith(".weight"):
                total += numel * per_value
            else:
                total += numel * (item if floating else _BYTES.get(info["dtype"], 4))
    return int(total)


# --- loading --------------------------------------------------------------------------------


def resolve_dtype(choice: str, device: torch.device, folder: Path) -> torch.dtype:
    """auto: bf16 on CUDA (fp16 where bf16 is not supported); on the CPU, the dtype the weights
    are stored in, so that nothing is converted (and fp32 demo weights stay exact)."""
    if choice in DTYPES:
        return DTYPES[choice]
    if choice != "auto":
        raise ModelSourceError(f"unknown dtype {choice!r}; choose one of: {', '.join(DTYPE_CHOICES)}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return stored_dtype(folder)


@dataclass
class Loaded:
    module: torch.nn.Module
    tokenizer: Any | None
    dtype: torch.dtype
    note: str = ""  # how it was loaded, for the log


def check_files(path: Path, kind: str) -> None:
    """The part's folder has its config and, for a text encoder, its tokenizer folder. (Without
    the folder transformers builds an empty tokenizer instead of failing, and encoding a prompt
    then fails with "int too big to convert" from its model_max_length of 1e30.)"""
    part = PARTS[kind]
    if not (path / part.subfolder).is_dir():
        raise ModelSourceError(f"{path} has no {part.subfolder}/ folder, so it has no {kind} to load")
    missing = [] if (path / part.subfolder / "config.json").is_file() else [f"{part.subfolder}/config.json"]
    if part.tokenizer and not (path / part.tokenizer).is_dir():
        missing.append(f"{part.tokenizer}/")
    if missing:
        raise ModelSourceError(
            f"{path} is incomplete: the {kind} needs {' and '.join(missing)}, which is missing; "
            "download the model again"
        )


def load_part(path: Path, kind: str, quantization: str, dtype_choice: str, device: torch.device) -> Loaded:
    """Load one component of a pipeline folder onto `device`."""
    part = PARTS[kind]
    folder = path / part.subfolder
    check_files(path, kind)
    _headers(folder)  # a damaged weights file is named here, whichever library would read it
    dtype = resolve_dtype(dtype_choice, device, folder)
    q.check_choice(quantization)
    if quantization != q.NONE and not part.quantizable:
        raise q.QuantizationError(f"{kind} is not quantized by fluxloom; use quantization 'none'")
    loader = {"CLIP": _load_clip, "T5": _load_t5, "FLUX_MODEL": _load_transformer, "VAE": _load_vae}[kind]
    loaded = loader(path, part, quantization, dtype, device)
    # eval() only: parameters keep requires_grad as diffusers' from_pretrained leaves them, since
    # torch picks a different (not bit-identical) matmul path for batched Linear inputs when
    # weights do not require grad, and FLUX output must equal diffusers' bit for bit. Every
    # consumer runs under torch.no_grad(), so no graph is ever built.
    loaded.module.eval()
    return loaded


def _load_clip(path: Path, part: Part, quantization: str, dtype: torch.dtype, device: torch.device) -> Loaded:
    from transformers import CLIPTextModel, CLIPTokenizer

    module = CLIPTextModel.from_pretrained(path, subfolder=part.subfolder, dtype=dtype).to(device)
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder=part.tokenizer)
    return Loaded(module, tokenizer, dtype)


def _load_t5(path: Path, part: Part, quantization: str, dtype: torch.dtype, device: torch.device) -> Loaded:
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    if q.streams_on(quantization, device):
        # transformers loads every full-precision weight before quantizing on the CPU, so the
        # 8-bit phase would peak above the unquantized one: read the shards layer by layer and
        # quantize each Linear as it comes (the single-file loader's code, with the folder's own
        # config and tokenizer), so the peak is the quantized model plus one layer.
        from nodes.flux.formats.text_encoders import load_text_encoder_file

        config = T5Config.from_pretrained(path, subfolder=part.subfolder)
        module, _ = load_text_encoder_file(
            path / part.subfolder, "T5", quantization, dtype, device, prefix="", config=config
        )
        tokenizer = T5TokenizerFast.from_pretrained(path, subfolder=part.tokenizer)
        return Loaded(module, tokenizer, dtype, f"{quantization} on {device.type}: streamed layer by layer")

    config = q.transformers_config(quantization, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config is not None:
        kwargs["quantization_config"] = config
        # transformers places quantized weights itself; the CPU needs an explicit map.
        kwargs["device_map"] = {"": _device_map_target(device)}
    try:
        module = T5EncoderModel.from_pretrained(path, subfolder=part.subfolder, **kwargs)
    except q.QuantizationError:
        raise
    except Exception as exc:
        raise _quantization_failure("T5", quantization, device, exc) from exc
    if config is None:
        module = module.to(device)
    tokenizer = T5TokenizerFast.from_pretrained(path, subfolder=part.tokenizer)
    return Loaded(module, tokenizer, dtype)


def _device_map_target(device: torch.device) -> int | str:
    if device.type != "cuda":
        return device.type
    return device.index if device.index is not None else torch.cuda.current_device()


def _load_transformer(
    path: Path, part: Part, quantization: str, dtype: torch.dtype, device: torch.device
) -> Loaded:
    from diffusers import FluxTransformer2DModel

    if q.streams_on(quantization, device):
        # diffusers' bitsandbytes quantizer refuses to run without a GPU, and its torchao path
        # loads every full-precision weight first; bitsandbytes' and torchao's layers run on the
        # CPU, so fluxloom reads the checkpoint itself and quantizes each Linear as it is read.
        try:
            module, done, kept = q.load_streaming(
                FluxTransformer2DModel, path / part.subfolder, quantization, dtype, device
            )
        except q.QuantizationError:
            raise
        except CheckpointError as exc:
            raise ModelSourceError(str(exc)) from exc
        except Exception as exc:
            raise _quantization_failure("transformer", quantization, device, exc) from exc
        note = f"{quantization} on the CPU: {done} Linear layers quantized by fluxloom while loading"
        if kept:
            note += f", {kept} kept in {str(dtype).removeprefix('torch.')} (in-features not a multiple of 64)"
        log.info("transformer: %s", note)
        return Loaded(module, None, dtype, note)
    config = q.diffusers_config(quantization, dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config is not None:
        kwargs["quantization_config"] = config
        if quantization in q.BNB_CHOICES:  # diffusers places bitsandbytes weights itself
            kwargs["device_map"] = {"": _device_map_target(device)}
    try:
        module = FluxTransformer2DModel.from_pretrained(path, subfolder=part.subfolder, **kwargs)
    except q.QuantizationError:
        raise
    except Exception as exc:
        raise _quantization_failure("transformer", quantization, device, exc) from exc
    if quantization not in q.BNB_CHOICES:
        module = module.to(device)  # bitsandbytes models are placed on the GPU by diffusers
    note = ""
    return Loaded(module, None, dtype, note)


def _load_vae(path: Path, part: Part, quantization: str, dtype: torch.dtype, device: torch.device) -> Loaded:
    from diffusers import AutoencoderKL

    module = AutoencoderKL.from_pretrained(path, subfolder=part.subfolder, dtype=dtype).to(device)
    return Loaded(module, None, dtype)


def _quantization_failure(what: str, quantization: str, device: torch.device, exc: Exception) -> Exception:
    """Turn a library's failure to load a quantized model into a message that says what works."""
    if quantization == q.NONE:
        return ModelSourceError(f"could not load the {what}: {exc}")
    other = q.INT8_BNB if quantization == q.INT8_TORCHAO else q.INT8_TORCHAO
    hint = f"choose {other!r} or 'none'"
    if quantization == q.NF4_BNB and device.type != "cuda":
        hint = (
            "bitsandbytes nf4 on the CPU needs every layer's in-features to be a multiple of 64; "
            f"choose {q.INT8_BNB!r}, {q.INT8_TORCHAO!r} or 'none'"
        )
    return q.QuantizationError(
        f"loading the {what} with {quantization!r} failed on {device.type}: {exc} ({hint})"
    )


def check_loadable(path: Path, kind: str, quantization: str, device: torch.device | None) -> None:
    """Cheap checks a loader node makes before any weights are read, so that an impossible
    choice fails in the loader with a message that says what works instead. `path` is a
    pipeline folder or a single file; `device` None (no model manager) skips the device checks."""
    part = PARTS[kind]
    if path.is_dir():
        check_files(path, kind)
    q.check_choice(quantization)
    if quantization != q.NONE and not part.quantizable:
        raise q.QuantizationError(f"{kind} is not quantized by fluxloom; use quantization 'none'")
    if quantization in q.BNB_CHOICES:
        q.require_package("bitsandbytes", quantization)
    elif quantization == q.INT8_TORCHAO:
        q.require_package("torchao", quantization)
    on_cpu = device is not None and device.type != "cuda"
    if quantization == q.NF4_BNB and kind == "T5" and on_cpu and path.is_dir():
        bad = _linear_in_features_not_64(path / part.subfolder)
        if bad:
            raise q.QuantizationError(
                f"nf4 (bitsandbytes) cannot quantize this T5 on the CPU: bitsandbytes packs 4-bit "
                f"weights on the CPU only for in-features that are a multiple of 64, and {len(bad)} "
                f"layers are not (e.g. {bad[0]}); choose {q.INT8_BNB!r}, {q.INT8_TORCHAO!r} or 'none', "
                "or run on CUDA"
            )


def _linear_in_features_not_64(folder: Path) -> list[str]:
    bad = []
    for header in _headers(folder):
        for key, info in header.items():
            shape = info["shape"]
            is_linear = key.endswith(".weight") and len(shape) == 2 and ".layer." in key
            if is_linear and "relative_attention_bias" not in key and shape[1] % 64:
                bad.append(f"{key} has {shape[1]}")
    return bad
