"""Single safetensors files as sets of named tensors, read one tensor at a time (fp8 included),
and all-in-one checkpoints split into their parts by key prefix.

An all-in-one FLUX checkpoint as ComfyUI saves it (flux1-dev-fp8.safetensors in `checkpoints/`)
holds the transformer under `model.diffusion_model.`, the VAE under `vae.` (`first_stage_model.`
in older LDM-style files), CLIP-L under `text_encoders.clip_l.transformer.` and T5-XXL under
`text_encoders.t5xxl.transformer.`. Below those prefixes the text encoders use transformers' own
key layout (`text_model.encoder.layers.0...`, `encoder.block.0...`), the VAE BFL's autoencoder
layout and the transformer BFL's layout. A `Part` is a view of one of them with the prefix
removed, so that each loader reads an all-in-one file through the very code that reads a file
holding its part alone.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes.flux.checkpoint import DTYPES, CheckpointError, read_header, tensor_at

# safetensors' names for the 8-bit float types (checkpoint.DTYPES does not list them yet).
FP8_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class FormatError(CheckpointError):
    """A file is readable but is not the model its loader expects, or lacks what fluxloom needs
    to build it; the message names the file and what is missing."""


TRANSFORMER = "transformer"
VAE = "vae"
CLIP_L = "clip_l"
T5XXL = "t5xxl"
# Prefixes of each part in an all-in-one checkpoint, the most specific first.
PART_PREFIXES: dict[str, tuple[str, ...]] = {
    TRANSFORMER: ("model.diffusion_model.",),
    VAE: ("vae.", "first_stage_model."),
    CLIP_L: ("text_encoders.clip_l.transformer.", "text_encoders.clip_l."),
    T5XXL: ("text_encoders.t5xxl.transformer.", "text_encoders.t5xxl."),
}


@dataclass
class TensorFile:
    """A safetensors file: its tensors' shapes and stored dtypes from the header, its metadata,
    and each tensor read on demand with plain file reads (no memory map, so only what is read
    is resident). Use as a context manager to keep one file handle open while reading."""

    path: Path
    header: dict[str, dict[str, Any]] = field(init=False)
    metadata: dict[str, str] = field(init=False)
    _base: int = field(init=False)
    _fh: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.header, self._base = read_header(self.path)
        self.metadata = read_metadata(self.path)

    def __enter__(self) -> TensorFile:
        self._fh = open(self.path, "rb")
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()
        self._fh = None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.header[key]["shape"])

    def stored_dtype(self, key: str) -> str:
        """The safetensors dtype name ("BF16", "F8_E4M3", ...)."""
        return self.header[key]["dtype"]

    def nbytes(self, key: str) -> int:
        start, end = self.header[key]["data_offsets"]
        return end - start

    def read(self, key: str) -> torch.Tensor:
        info = self.header[key]
        if self._fh is None:
            with open(self.path, "rb") as fh:
                return _tensor(fh, self._base, info, self.path)
        return _tensor(self._fh, self._base, info, self.path)


def _tensor(fh, base: int, info: dict[str, Any], path: Path) -> torch.Tensor:
    name = info["dtype"]
    if name in FP8_DTYPES:  # one byte per value: read the bytes, then view them as fp8
        return tensor_at(fh, base, {**info, "dtype": "U8"}).view(FP8_DTYPES[name])
    if name not in DTYPES:
        raise CheckpointError(f"{path} holds a tensor of type {name}, which fluxloom cannot read")
    return tensor_at(fh, base, info)


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors header (read_header drops them)."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        raw = fh.read(n)
    meta = json.loads(raw).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


@dataclass
class Part:
    """The tensors of one part of a file, keys without the part's prefix. Reads go through the
    file (open it as a context manager around a loop of reads)."""

    file: Any  # TensorFile or gguf_transformer.GGUFFile: keys/shape/stored_dtype/nbytes/read
    prefix: str = ""

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def metadata(self) -> dict[str, str]:
        return self.file.metadata

    def keys(self) -> list[str]:
        p = self.prefix
        return [k[len(p) :] for k in self.file.keys() if k.startswith(p)]

    def shape(self, key: str) -> tuple[int, ...]:
        return self.file.shape(self.prefix + key)

    def stored_dtype(self, key: str) -> str:
        return self.file.stored_dtype(self.prefix + key)

    def nbytes(self, key: str) -> int:
        return self.file.nbytes(self.prefix + key)

    def read(self, key: str) -> torch.Tensor:
        return self.file.read(self.prefix + key)

    def __enter__(self) -> Part:
        self.file.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.file.__exit__(*exc)


def split_checkpoint(file: TensorFile | Path | str) -> dict[str, Part]:
    """The parts of an all-in-one checkpoint found by key prefix: any of "transformer", "vae",
    "clip_l", "t5xxl". A file holding one part alone, unprefixed, gives {} here."""
    if not isinstance(file, TensorFile):
        file = TensorFile(Path(file))
    keys = file.keys()
    parts: dict[str, Part] = {}
    for name, prefixes in PART_PREFIXES.items():
        for prefix in prefixes:
            if any(k.startswith(prefix) for k in keys):
                parts[name] = Part(file, prefix)
                break
    return parts


def part_of(file: TensorFile, name: str) -> Part:
    """Part `name` of `file`: the prefixed part of an all-in-one checkpoint, or else the whole
    file (a file that holds one model alone)."""
    parts = split_checkpoint(file)
    if name in parts:
        return parts[name]
    if parts:
        found = ", ".join(parts)
        raise FormatError(f"{file.path} is an all-in-one checkpoint without a {name} (it holds: {found})")
    return Part(file, "")


_TORCH_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_TORCH_NAMES.update({v: k for k, v in FP8_DTYPES.items()})


@dataclass
class TensorDict:
    """An in-memory state dict with a file's interface, so that the same conversion code reads
    it (tests, writers, and the full-width check against diffusers' converter)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path = Path("<state dict>")

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def stored_dtype(self, key: str) -> str:
        dtype = self.tensors[key].dtype
        return _TORCH_NAMES.get(dtype, str(dtype))

    def nbytes(self, key: str) -> int:
        t = self.tensors[key]
        return t.numel() * t.element_size()

    def read(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def __enter__(self) -> TensorDict:
        return self

    def __exit__(self, *exc) -> None:
        pass
