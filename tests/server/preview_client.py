"""What the preview tests share: a websocket client that keeps binary frames (the plain one skips
them), and a reader of ComfyUI's preview frames written from the protocol (big-endian uint32
event type; type 1: uint32 image format, image; type 4: uint32 length, JSON metadata, image)."""

from __future__ import annotations

import io
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from tests.server.wsclient import WSClient


@dataclass
class Frame:
    type: int  # 1 or 4
    image: bytes
    metadata: dict[str, Any] | None = None  # type 4 only
    image_format: int | None = None  # type 1 only: 1 JPEG, 2 PNG

    def size(self) -> tuple[int, int]:
        from PIL import Image

        with Image.open(io.BytesIO(self.image)) as im:
            assert im.format == "JPEG", im.format
            return im.size


def parse_frame(payload: bytes) -> Frame:
    (kind,) = struct.unpack(">I", payload[:4])
    if kind == 1:
        (fmt,) = struct.unpack(">I", payload[4:8])
        return Frame(1, payload[8:], image_format=fmt)
    if kind == 4:
        (length,) = struct.unpack(">I", payload[4:8])
        return Frame(4, payload[8 + length :], metadata=json.loads(payload[8 : 8 + length]))
    raise AssertionError(f"unknown binary event type {kind}")


class PreviewClient(WSClient):
    """Messages as they come, text (JSON dicts) and binary (Frames) in one ordered list."""

    def hello(self, preview_metadata: bool = True) -> None:
        """ComfyUI's first message: the client's feature flags (the server answers with its own)."""
        flags = {"supports_preview_metadata": preview_metadata}
        self._send(1, json.dumps({"type": "feature_flags", "data": flags}).encode())

    def next_message(self, timeout: float) -> dict[str, Any] | Frame:
        kind, message = self.next_data(timeout)
        return json.loads(message) if kind == 1 else parse_frame(message)

    def collect(self, predicate, timeout: float = 60.0) -> list[dict[str, Any] | Frame]:
        """Every message up to and including the first JSON one that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any] | Frame] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met after {len(seen)} messages")
            msg = self.next_message(left)
            seen.append(msg)
            if isinstance(msg, dict) and predicate(msg):
                return seen


def frames(messages: list) -> list[Frame]:
    return [m for m in messages if isinstance(m, Frame)]


def frames_inside_node(messages: list, node: str) -> bool:
    """Every frame came after `executing` of `node` and before the next `executing`."""
    running = None
    for m in messages:
        if isinstance(m, dict) and m["type"] == "executing":
            running = m["data"]["node"]
        elif isinstance(m, Frame) and running != node:
            return False
    return True
