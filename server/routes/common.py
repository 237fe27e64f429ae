"""What every route handler shares: the application state, JSON body reading with a size limit
and a check against the route's documented schema, and JSON errors."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from server import events, jsontext
from server.limits import Limits
from server.openapi import body_schema, check_body
from server.runtime import Runtime
from server.security import json_error
from server.store import PromptStore
from server.worker import Worker
from server.ws import Hub


@dataclass
class AppState:
    runtime: Runtime
    store: PromptStore
    hub: Hub
    worker: Worker
    data_dir: Path
    web_dir: Path
    limits: Limits = field(default_factory=Limits)
    cluster: Any = None  # a distributed front end (server/distributed/frontend.py), or None

    @property
    def workflows_dir(self) -> Path:
        return self.data_dir / "workflows"

    def folder(self, kind: str) -> Path | None:
        """The folder behind a `type=` of /view and /upload/image."""
        env = self.runtime.env
        return {"output": env.output_dir, "input": env.input_dir, "temp": env.temp_dir}.get(kind)

    def status(self) -> dict[str, Any]:
        return status_payload(self.store)


def status_payload(store: PromptStore) -> dict[str, Any]:
    """The websocket `status` message's data (without `sid`)."""
    return events.status(store.remaining())


STATE = web.AppKey("fluxloom_state", AppState)


def state(request: web.Request) -> AppState:
    return request.app[STATE]


class BadRequest(Exception):
    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status

    def response(self) -> web.Response:
        return json_error(self.status, self.kind, self.message)


async def read_json(request: web.Request, default: Any = None) -> Any:
    """The body as JSON whatever its Content-Type (ComfyUI clients often send none), within the
    size limit."""
    limit = state(request).limits.max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest("request_too_large", f"request body over {limit} bytes", 413)
    body = bytearray()
    # read(n) returns what has arrived so far, not the whole body: read to the end.
    while chunk := await request.content.read(1 << 16):
        body += chunk
        if len(body) > limit:
            raise BadRequest("request_too_large", f"request body over {limit} bytes", 413)
    if not body.strip():
        return default
    if len(body) < jsontext.PIECEWISE_CHARS:
        return _decode(body)
    # A large body (a prompt of many thousand nodes) is decoded off the event loop, and member by
    # member so that the loop's thread gets the interpreter back between members.
    return await asyncio.to_thread(_decode, body)


def _decode(body: bytearray) -> Any:
    try:
        data = jsontext.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("invalid_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid_json", "request body is not valid JSON: nested too deeply") from None
    if _MAY_HOLD_SURROGATES.search(body):
        # json takes unpaired surrogates ("\ud800"); SQLite, files and logs cannot encode them.
        try:
            jsontext.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            message = "request body has an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
            raise BadRequest("invalid_json", message) from None
    return data


_MAY_HOLD_SURROGATES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _no_constant(name: str) -> float:
    # NaN/Infinity are not JSON; accepted, they would come back out as invalid JSON (or fail SQLite).
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


async def read_any_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty), not yet checked against its schema."""
    data = await read_json(request, {})
    if not isinstance(data, dict):
        raise BadRequest("invalid_json", "request body must be a JSON object")
    return data


def conform(request: web.Request, body: Any, kind: str = "invalid_request") -> None:
    """400 unless `body` matches the request body schema that /openapi.json gives this route."""
    route = request.match_info.route
    path = route.resource.canonical if route.resource is not None else request.path
    schema = body_schema(request.method, path)
    if schema is not None and (problem := check_body(body, schema)):
        raise BadRequest(kind, problem)


async def read_object(request: web.Request, kind: str = "invalid_request") -> dict[str, Any]:
    """The body as a JSON object that matches the route's documented schema."""
    body = await read_any_object(request)
    conform(request, body, kind)
    return body
