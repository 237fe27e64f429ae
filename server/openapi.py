"""The OpenAPI 3.1 document for `GET /openapi.json`, built from one description per route.
`describe()` refuses a route without a description, and a test compares the document with the
router, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

OBJ = {"type": "object"}
ERROR = {
    "type": "object",
    "properties": {"error": OBJ, "node_errors": OBJ},
    "required": ["error", "node_errors"],
}
JSON_OK = {"200": {"description": "OK", "content": {"application/json": {"schema": OBJ}}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(ERROR, description)


def _query(name: str, description: str, required: bool = False, kind: str = "string") -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": kind},
    }


def _path(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


PROMPT_BODY = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {**OBJ, "description": "API-format prompt (or a UI-format workflow, converted here)"},
        "client_id": {"type": "string", "description": "websocket clientId that gets this prompt's messages"},
        "prompt_id": {"type": "string"},
        "number": {"type": "number", "description": "queue position key (lower runs first)"},
        "front": {"type": "boolean", "description": "put the prompt at the head of the queue"},
        "extra_data": {**OBJ, "description": "{extra_pnginfo: {workflow}} is written into saved PNGs"},
        "set": {**OBJ, "description": 'fluxloom: overrides {"<node id or title>.<input>": value}'},
    },
}
QUEUED = {
    "type": "object",
    "properties": {"prompt_id": {"type": "string"}, "number": {"type": "number"}, "node_errors": OBJ},
}
CLEAR_DELETE = {
    "type": "object",
    "properties": {"clear": {"type": "boolean"}, "delete": {"type": "array", "items": {"type": "string"}}},
}
PID = _path("prompt_id", "the prompt id returned by POST /prompt")
NAME = _path("name", "workflow name (file stem)")
WF_QUEUE_BODY = {
    "type": "object",
    "properties": {
        "set": {**OBJ, "description": '{"<node id or title>.<input>": value}'},
        "client_id": {"type": "string"},
        "front": {"type": "boolean"},
        "prompt_id": {"type": "string"},
    },
}

# (method, path) → operation. Paths are ComfyUI's; each is also served under /api.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/prompt"): {
        "summary": "Validate and queue a prompt (body may come without a Content-Type)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": PROMPT_BODY}}},
        "responses": {"200": _json(QUEUED, "queued"), "400": _err("invalid prompt, with node_errors")},
    },
    ("GET", "/prompt"): {"summary": "Queue size: {exec_info: {queue_remaining}}", "responses": JSON_OK},
    ("GET", "/queue"): {
        "summary": "Running and pending prompts as [number, prompt_id, prompt, extra_data, outputs]",
        "responses": JSON_OK,
    },
    ("POST", "/queue"): {
        "summary": "Clear the pending queue or delete pending prompts by id",
        "requestBody": {"content": {"application/json": {"schema": CLEAR_DELETE}}},
        "responses": JSON_OK,
    },
    ("GET", "/history"): {
        "summary": "Finished prompts, paged (negative offset with max_items: the latest ones)",
        "parameters": [
            _query("max_items", "page size", kind="integer"),
            _query("offset", "index of the first item", kind="integer"),
        ],
        "responses": JSON_OK,
    },
    ("GET", "/history/{prompt_id}"): {
        "summary": "One finished prompt ({} while pending or unknown)",
        "parameters": [PID],
        "responses": JSON_OK,
    },
    ("POST", "/history"): {
        "summary": "Clear the history or delete entries by id",
        "requestBody": {"content": {"application/json": {"schema": CLEAR_DELETE}}},
        "responses": JSON_OK,
    },
    ("POST", "/interrupt"): {
        "summary": "Interrupt the running prompt (only it, when prompt_id is given)",
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": JSON_OK,
    },
    ("POST", "/free"): {
        "summary": "Release models (unload_models) and clear the output cache (free_memory)",
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": JSON_OK,
    },
    ("GET", "/jobs/{prompt_id}"): {
        "summary": "fluxloom: job status (pending with position, running with node and step, "
        "success/error/interrupted with outputs and files)",
        "parameters": [PID],
        "responses": {**JSON_OK, "404": _err("unknown prompt id")},
    },
    ("GET", "/object_info"): {"summary": "Every node type's declaration", "responses": JSON_OK},
    ("GET", "/object_info/{node_class}"): {
        "summary": "One node type's declaration",
        "parameters": [_path("node_class", "class_type")],
        "responses": {**JSON_OK, "404": _err("unknown node type")},
    },
    ("GET", "/system_stats"): {
        "summary": "System, devices, and the model manager's state under 'fluxloom'",
        "responses": JSON_OK,
    },
    ("GET", "/view"): {
        "summary": "An image from the output, input or temp folder",
        "parameters": [
            _query("filename", "file name", required=True),
            _query("subfolder", "folder inside the type's folder"),
            _query("type", "output (default), input or temp"),
        ],
        "responses": {
            "200": {"description": "the file", "content": {"image/*": {}}},
            "403": _err("path leaves its folder"),
            "404": _err("no such file"),
        },
    },
    ("POST", "/upload/image"): {
        "summary": "Upload an image (multipart: image, overwrite, subfolder, type)",
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": OBJ}}},
        "responses": {
            "200": _json({"type": "object", "properties": {"name": {}, "subfolder": {}, "type": {}}}),
            "400": _err("not an image"),
            "403": _err("path leaves its folder"),
            "409": _err("a file and a folder of that name collide"),
            "413": _err("too large"),
        },
    },
    ("GET", "/workflows"): {
        "summary": "fluxloom: shipped and saved workflows {workflows: [{name, source, read_only, format}]}",
        "responses": JSON_OK,
    },
    ("GET", "/workflows/{name}"): {
        "summary": "fluxloom: a workflow's JSON as stored",
        "parameters": [NAME],
        "responses": {**JSON_OK, "404": _err("no such workflow")},
    },
    ("PUT", "/workflows/{name}"): {
        "summary": "fluxloom: save a workflow (UI or API format); shipped names are read-only",
        "parameters": [NAME],
        "requestBody": {"required": True, "content": {"application/json": {"schema": OBJ}}},
        "responses": {**JSON_OK, "403": _err("shipped workflows are read-only")},
    },
    ("DELETE", "/workflows/{name}"): {
        "summary": "fluxloom: delete a saved workflow",
        "parameters": [NAME],
        "responses": {**JSON_OK, "403": _err("read-only"), "404": _err("no such workflow")},
    },
    ("POST", "/workflows/{name}/queue"): {
        "summary": "fluxloom: queue a saved workflow with overrides",
        "parameters": [NAME],
        "requestBody": {"content": {"application/json": {"schema": WF_QUEUE_BODY}}},
        "responses": {
            "200": _json(QUEUED, "queued"),
            "400": _err("invalid"),
            "404": _err("no such workflow"),
        },
    },
    ("GET", "/ws"): {
        "summary": "Websocket: status, execution_start, execution_cached, executing, progress, executed, "
        "execution_success, execution_error, execution_interrupted as {type, data}",
        "parameters": [_query("clientId", "id that receives the messages of prompts queued with it")],
        "responses": {"101": {"description": "switching to the websocket protocol"}},
    },
    ("GET", "/openapi.json"): {"summary": "This document", "responses": JSON_OK},
}


def describe(routes: list[tuple[str, str]], version: str = "0.1.0") -> dict[str, Any]:
    """The document for the given (method, path) pairs, as the router serves them."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        canonical = path.removeprefix("/api") if path.startswith("/api/") else path
        op = OPERATIONS.get((method, canonical))
        if op is None:
            raise KeyError(f"route {method} {path} has no OpenAPI description in server/openapi.py")
        op_id = method.lower() + path.replace("/", "_").replace("{", "").replace("}", "").replace(".", "_")
        paths.setdefault(path, {})[method.lower()] = {**op, "operationId": op_id}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fluxloom",
            "version": version,
            "description": "ComfyUI-compatible HTTP API, plus saved workflows, job status and this document. "
            "Every route is also served under /api. With --token, send 'Authorization: Bearer TOKEN' "
            "or ?token=TOKEN.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }
