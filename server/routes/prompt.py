"""ComfyUI's queue routes: POST/GET /prompt, GET/POST /queue, GET/POST /history, /interrupt,
/free; and fluxloom's GET /jobs/{prompt_id}."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web

from server.prepare import prepare_prompt
from server.routes.common import AppState, BadRequest, conform, read_any_object, read_object, state
from server.store import PENDING, RUNNING, DuplicatePromptId
from server.validation import ValidationError
from server.workflow_io import WorkflowError


async def enqueue(st: AppState, data: Any, body: dict[str, Any], overrides: Any = None) -> web.Response:
    """Prepare (convert, override, validate) and queue; 200 `{prompt_id, number, node_errors,
    warnings}` or 400 `{error, node_errors}`. `data` may be a UI workflow or an API prompt;
    `overrides` are `{"node.input": value}`."""
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise BadRequest("invalid_prompt", "extra_data must be a JSON object")
    prompt_id = str(body.get("prompt_id") or uuid.uuid4())
    if len(prompt_id) > 200 or "/" in prompt_id or "\x00" in prompt_id:
        raise BadRequest("invalid_prompt", "prompt_id must be at most 200 characters, without '/'")
    number = _number(body.get("number"))
    try:
        prepared = await asyncio.to_thread(
            prepare_prompt,
            data,
            st.runtime.registry,
            st.runtime.env,
            overrides=overrides,
            extra_data=extra_data,
            max_nodes=st.limits.max_nodes,
        )
    except WorkflowError as exc:
        raise BadRequest("invalid_workflow", f"workflow could not be converted: {exc}") from None
    except ValidationError as exc:
        return web.json_response(exc.as_json(), status=400)
    if st.cluster is not None and (refused := st.cluster.refuse(prepared)):
        return web.json_response(refused, status=400)  # no live worker has the prompt's models
    if st.store.exists(prompt_id):
        raise BadRequest("duplicate_prompt_id", f"prompt_id {prompt_id!r} is already used")
    client_id = body.get("client_id")
    if client_id is not None:
        client_id = str(client_id)
        prepared.extra_data["client_id"] = client_id
    try:  # in a thread: storing a huge prompt must not hold up other requests
        number = await asyncio.to_thread(
            st.store.add,
            prompt_id,
            prepared.prompt,
            prepared.extra_data,
            prepared.outputs,
            client_id,
            number=number,
            front=bool(body.get("front")),
            plan=prepared.plan(),
        )
    except DuplicatePromptId as exc:  # the same prompt_id queued twice at once
        raise BadRequest("duplicate_prompt_id", str(exc)) from None
    st.hub.broadcast_status()
    number = int(number) if float(number).is_integer() else number
    return web.json_response(
        {"prompt_id": prompt_id, "number": number, "node_errors": {}, "warnings": prepared.warnings}
    )


def _number(number: Any) -> float | None:
    if number is None:
        return None
    if isinstance(number, bool) or not isinstance(number, int | float) or abs(number) >= 2**53:
        raise BadRequest("invalid_prompt", "number must be a number below 2^53")
    return float(number)  # SQLite cannot bind integers past 2^63


async def post_prompt(request: web.Request) -> web.Response:
    body = await read_any_object(request)
    if "prompt" not in body:
        raise BadRequest("no_prompt", "No prompt provided")
    conform(request, body, "invalid_prompt")
    return await enqueue(state(request), body["prompt"], body, body.get("set"))


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(state(request).status()["status"])


async def get_queue(request: web.Request) -> web.Response:
    # Read and spliced off the event loop: a running prompt may have 100,000 nodes.
    body = await asyncio.to_thread(state(request).store.queue_json)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _ids(value: Any) -> list[str]:
    return list(value)  # conform() made sure: a list of strings


async def post_queue(request: web.Request) -> web.Response:
    st = state(request)
    body = await read_object(request)
    deleted = 0
    if body.get("clear"):
        deleted += st.store.delete_pending(None)
    if "delete" in body:
        deleted += st.store.delete_pending(_ids(body["delete"]))
    st.hub.broadcast_status()
    return web.json_response({"deleted": deleted})


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("invalid_request", f"{name} must be an integer, not {raw!r}") from None
    return max(-(2**62), min(value, 2**62))  # SQLite takes 64-bit integers only


async def get_history(request: web.Request) -> web.StreamResponse:
    """ComfyUI's paging (`max_items`, `offset`), with a default page. The entries are read and
    spliced in a thread and written a few MiB at a time, so a large history never holds the
    event loop (or a copy of itself in memory)."""
    st = state(request)
    max_items = _int_query(request, "max_items", st.limits.history_page)
    offset = _int_query(request, "offset", -1)
    if max_items < 0:
        raise BadRequest("invalid_request", "max_items must be >= 0")
    seqs = await asyncio.to_thread(st.store.history_page, max_items, offset)
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    sep = b"{"
    while seqs:
        entries, used = await asyncio.to_thread(st.store.history_json, seqs)
        del seqs[:used]
        for prompt_id, entry in entries:
            await response.write(sep + json.dumps(prompt_id).encode() + b": " + entry.encode())
            sep = b", "
    await response.write(b"{}" if sep == b"{" else b"}")
    await response.write_eof()
    return response


async def get_history_item(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = await asyncio.to_thread(state(request).store.entry_json, prompt_id)
    if entry is None:
        return web.json_response({})
    return web.Response(text=f"{{{json.dumps(prompt_id)}: {entry}}}", content_type="application/json")


async def post_history(request: web.Request) -> web.Response:
    st = state(request)
    body = await read_object(request)
    deleted = 0
    if body.get("clear"):
        deleted += st.store.delete_history(None)
    if "delete" in body:
        deleted += st.store.delete_history(_ids(body["delete"]))
    return web.json_response({"deleted": deleted})


async def post_interrupt(request: web.Request) -> web.Response:
    body = await read_object(request)
    prompt_id = body.get("prompt_id")
    done = state(request).worker.interrupt(str(prompt_id) if prompt_id else None)
    return web.json_response({"interrupted": done})


async def post_free(request: web.Request) -> web.Response:
    body = await read_object(request)
    unload, free = bool(body.get("unload_models")), bool(body.get("free_memory"))
    state(request).worker.request_free(unload, free)
    return web.json_response({"unload_models": unload, "free_memory": free})


async def get_job(request: web.Request) -> web.Response:
    st = state(request)
    prompt_id = request.match_info["prompt_id"]
    row = await asyncio.to_thread(st.store.get, prompt_id)  # a huge prompt decodes off the loop
    if row is None:
        raise BadRequest("not_found", f"no job {prompt_id!r}", 404)
    job: dict[str, Any] = {"prompt_id": row.prompt_id, "number": row.queue_item()[0], "status": row.status}
    if row.status == PENDING:
        job["position"] = st.store.position(prompt_id)
    elif row.status == RUNNING:
        if st.cluster is not None:
            current = await asyncio.to_thread(st.cluster.progress, prompt_id)
        else:
            current = dict(st.runtime.executor.current or {})
        node = current.get("node")
        info = row.prompt.get(node, {}) if node is not None and "class_type" not in current else {}
        job["node"] = node
        job["node_type"] = current.get("class_type", info.get("class_type"))
        job["node_title"] = current.get("title", info.get("_meta", {}).get("title", info.get("class_type")))
        job["step"] = current.get("value", 0)
        job["steps"] = current.get("max", 0)
    else:
        job["outputs"] = row.result
        job["files"] = _files(st, row.result)
        job["error"] = row.error
        job["seconds"] = round((row.finished or row.created) - row.created, 3)
    return web.json_response(job)


def _files(st: AppState, outputs: dict[str, Any]) -> list[dict[str, str]]:
    """Every image of a job: its /view query and where it lies on the server."""
    files = []
    for ui in outputs.values():
        images = ui.get("images") if isinstance(ui, dict) else None
        # Custom nodes write these: skip what is not a file entry rather than fail the route.
        for img in images if isinstance(images, list) else []:
            if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
                continue
            kind, sub = img.get("type") or "output", img.get("subfolder") or ""
            folder = st.folder(kind) if isinstance(kind, str) else None
            if folder is None or not isinstance(sub, str):
                continue
            files.append(
                {
                    "filename": img["filename"],
                    "subfolder": sub,
                    "type": kind,
                    "path": str((folder / sub / img["filename"]).resolve()),
                }
            )
    return files
