"""Reading safetensors files without a memory map: headers (to size, type and check a checkpoint
before loading it) and tensors one at a time (so that a streaming loader holds one full-precision
layer at a time). A damaged file fails here with a message that names it."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class ModelSourceError(RuntimeError):
    """A model could not be found or read; the message names it and says what to do."""


class CheckpointError(RuntimeError):
    """A weights file is not a complete safetensors file (an interrupted download, a wrong file)."""


def read_header(file: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header and where its data starts. A damaged file fails here, naming
    it, rather than with a struct/JSON error (or a huge allocation, from a garbage length)."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        raw = fh.read(n) if 0 < n <= size - 8 else b""
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        for info in header.values():
            start, end = info["data_offsets"]
            if not 0 <= start <= end or 8 + n + end > size:
                raise ValueError("a tensor lies outside the file")
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{file} is not a complete safetensors file ({exc}); it may be an interrupted "
            "download: download it again"
        ) from exc
    return header, 8 + n


def tensor_keys(file: Path) -> list[str]:
    return list(read_header(file)[0])


def tensor_at(fh, base: int, info: dict[str, Any]) -> torch.Tensor:
    start, end = info["data_offsets"]
    dtype = DTYPES[info["dtype"]]
    if end == start:
        return torch.empty(info["shape"], dtype=dtype)
    buf = bytearray(end - start)
    fh.seek(base + start)
    if fh.readinto(buf) != len(buf):  # the file shrank since its header was read
        raise CheckpointError(f"{fh.name} ends before its tensor data does; download it again")
    return torch.frombuffer(buf, dtype=dtype).reshape(info["shape"])


def read_tensors(file: Path, skip) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs read with plain file reads: nothing stays mapped into the process."""
    header, base = read_header(file)
    with open(file, "rb") as fh:
        for key, info in header.items():
            if not skip(key):
                yield key, tensor_at(fh, base, info)


def read_tensor(file: Path, key: str) -> torch.Tensor:
    header, base = read_header(file)
    with open(file, "rb") as fh:
        return tensor_at(fh, base, header[key])
