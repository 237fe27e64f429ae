"""Every message and payload shape fluxloom sends, built in one place: ComfyUI's websocket events
(`{"type": event, "data": ...}` with these `data` shapes), the `execution_error` payload (also
stored in the history), the body of a refused request (`{"error", "node_errors"}`), and the queue
`status`. The executor, the worker, the HTTP routes, the CLI and remote workers all use these,
so a client sees the same shapes whichever part of fluxloom answered.

Error texts are bounded and built so that reporting an error can never fail in turn (an exception
whose `str()` raises, an input value too large to print): the node and its type always arrive.
"""

from __future__ import annotations

import json
import struct
import time
import traceback as tb
from collections.abc import Iterable
from typing import Any

MAX_MESSAGE_CHARS = 4000  # an exception message, an input description
MAX_TRACEBACK_LINES = 200


def timestamp() -> int:
    return int(time.time() * 1000)


# --- errors of a request ------------------------------------------------------------------------


def error_item(type_: str, message: str, details: str = "", **extra_info: Any) -> dict[str, Any]:
    """One error in ComfyUI's shape: the top-level `error` of a refused prompt, or one entry of a
    node's `errors` list."""
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info}


def error_body(error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of a refused request or prompt: `{"error": {...}, "node_errors": {...}}`."""
    return {"error": error, "node_errors": node_errors or {}}


# --- websocket events of one prompt -----------------------------------------------------------


def execution_start(prompt_id: str) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "timestamp": timestamp()}


def execution_cached(nodes: Iterable[str], prompt_id: str) -> dict[str, Any]:
    return {"nodes": list(nodes), "prompt_id": prompt_id, "timestamp": timestamp()}


def executing(node: str | None, prompt_id: str) -> dict[str, Any]:
    """The node now running; `node` None means the prompt is done (ComfyUI clients then fetch
    `/history/{prompt_id}`)."""
    return {"node": node, "display_node": node, "prompt_id": prompt_id}


def progress(value: int, total: int, node: str, prompt_id: str) -> dict[str, Any]:
    return {"value": value, "max": total, "node": node, "prompt_id": prompt_id}


def executed(node: str, output: dict[str, Any], prompt_id: str) -> dict[str, Any]:
    return {"node": node, "display_node": node, "output": output, "prompt_id": prompt_id}


def execution_success(prompt_id: str) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "timestamp": timestamp()}


def execution_warning(prompt_id: str, message: str) -> dict[str, Any]:
    """fluxloom's own event (e.g. the demo model stands in for a missing one)."""
    return {"prompt_id": prompt_id, "message": message}


def execution_interrupted(
    prompt_id: str, node_id: str | None, node_type: str | None, executed_nodes: Iterable[str]
) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed_nodes),
        "timestamp": timestamp(),
    }


def execution_error(
    prompt_id: str,
    message: str,
    *,
    exception_type: str,
    node_id: str | None = None,
    node_type: str | None = None,
    node_title: str | None = None,
    executed_nodes: Iterable[str] = (),
    traceback: list[str] | None = None,
    current_inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """ComfyUI's `execution_error` data; `node_id` None when no node is to blame (a prompt that
    could not run at all, a server that stopped)."""
    return {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "node_title": node_title,
        "executed": list(executed_nodes),
        "exception_message": bounded(message),
        "exception_type": exception_type,
        "traceback": list(traceback or []),
        "current_inputs": current_inputs or {},
        "current_outputs": {},
        "timestamp": timestamp(),
    }


# --- binary preview frames (ComfyUI's BinaryEventTypes) ------------------------------------------

PREVIEW_IMAGE = 1  # uint32 event type, uint32 image format, the image
PREVIEW_IMAGE_WITH_METADATA = 4  # uint32 event type, uint32 JSON length, the JSON, the image
JPEG = 1  # PREVIEW_IMAGE's image formats (2 is PNG)


def preview_metadata(node: str, prompt_id: str) -> dict[str, Any]:
    """What a preview frame says of itself: the node that drew it and its prompt (the official
    frontend puts the image on `display_node_id`)."""
    return {
        "node_id": node,
        "prompt_id": prompt_id,
        "display_node_id": node,
        "parent_node_id": None,
        "real_node_id": node,
        "image_type": "image/jpeg",
    }


def preview_frame(jpeg: bytes, metadata: dict[str, Any] | None = None) -> bytes:
    """A binary websocket frame of a JPEG preview: with its metadata (type 4) for clients that
    said `supports_preview_metadata`, else ComfyUI's older type 1, which names no node."""
    if metadata is None:
        return struct.pack(">II", PREVIEW_IMAGE, JPEG) + jpeg
    meta = json.dumps(metadata).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + jpeg


# --- queue status -------------------------------------------------------------------------------


def status(queue_remaining: int, sid: str | None = None) -> dict[str, Any]:
    """The `status` message's data (`sid` only in the first message of a connection)."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return data


# --- texts that never fail ------------------------------------------------------------------------


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def exception_message(exc: BaseException) -> str:
    """`str(exc)`, bounded; never raises (str() of some exceptions does, e.g. one holding an
    integer too large to print)."""
    try:
        text = str(exc)
    except Exception as failed:
        text = f"(the message could not be shown: {type(failed).__name__})"
    return bounded(text or type(exc).__name__)


def exception_type(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def format_traceback(exc: BaseException) -> list[str]:
    try:
        lines = tb.format_exception(exc)
    except Exception:  # the exception's own text failed: keep where it happened
        lines = [*tb.format_tb(exc.__traceback__), f"{exception_type(exc)}: {exception_message(exc)}\n"]
    if len(lines) > MAX_TRACEBACK_LINES:
        lines = [*lines[: MAX_TRACEBACK_LINES // 2], "…\n", *lines[-MAX_TRACEBACK_LINES // 2 :]]
    return [bounded(line) for line in lines]


def describe_value(value: Any) -> str:
    """A short description of an input value for `current_inputs`; never raises."""
    try:
        shape = getattr(value, "shape", None)
        if shape is not None:
            return f"{type(value).__name__}{tuple(shape)}"
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return bounded(text, 200)
