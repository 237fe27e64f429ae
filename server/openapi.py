"""The OpenAPI 3.1 document for `GET /openapi.json`, built from one description per route, and
the truth about the API: every status a route can answer is listed, and JSON request bodies are
checked against the same schemas (`check_body`), so the server is exactly as strict as the
document says. `describe()` refuses a route without a description; a test compares the document
with the router, and schemathesis (tests/hardening/test_schemathesis.py) fuzzes the live server
against it."""

from __future__ import annotations

import re
from typing import Any

OBJ = {"type": "object"}
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "required": ["type", "message"],
        },
        "node_errors": OBJ,
    },
    "required": ["error", "node_errors"],
}
JSON_OK = {"200": {"description": "OK", "content": {"application/json": {"schema": OBJ}}}}
ANY_OK = {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}}}
LIST_OK = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "array"}}}}}
NAMES_OK = {
    "200": {
        "description": "OK",
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}},
    }
}
PATH_OR_INFO = {
    "200": {
        "description": "the file's path, or {path, size, modified, created} with full_info=true",
        "content": {"application/json": {"schema": {"type": ["string", "object"]}}},
    }
}
JOB_STATUSES = "(pending|in_progress|completed|failed|cancelled)"


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(ERROR, description)


# What any route may answer besides its own statuses (security.py): a missing token when the
# server runs with --token, a cross-origin request or a foreign Host name.
COMMON_ERRORS = {
    "401": _err("an access token is required (server started with --token)"),
    "403": _err("cross-origin request, or a Host that is not this loopback server"),
}
# What any route that reads a request body may answer besides (limits.py, common.read_json).
BODY_ERRORS = {
    "400": _err("the body is not JSON, or does not match this schema (the message names the field)"),
    "408": _err("the body arrived too slowly"),
    "413": _err("the body is over the size limit"),
}


def _query(
    name: str,
    description: str,
    schema: dict[str, Any] | None = None,
    required: bool = False,
    kind: str = "string",
) -> dict:
    schema = schema or {"type": kind}
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _maybe(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or null (ComfyUI clients send `"client_id": null` and the like)."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*kinds, "null"]}


PROMPT_ID = {
    "type": "string",
    "maxLength": 200,
    "pattern": "^[^/\\x00]*$",
    "description": "empty: the server makes one",
}
WORKFLOW_NAME = {
    "type": "string",
    # server/routes/workflows.py NAME, and no '..' (a test keeps the two equal)
    "pattern": r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9 _.\-()]{0,127}$",
    "description": "a file stem: letters, digits, space, _ . - ( ); a trailing .json is ignored",
}
NUMBER = {
    "type": "number",
    "exclusiveMinimum": -(2**53),
    "exclusiveMaximum": 2**53,
    "description": "queue position key (lower runs first)",
}
PROMPT_BODY = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {
            **OBJ,
            "minProperties": 1,
            "description": "API-format prompt {node id: {class_type, inputs}} (or a UI-format workflow, "
            "converted here); a prompt that does not validate is a 400 with node_errors",
        },
        "client_id": _maybe({"type": "string", "description": "websocket clientId that gets its messages"}),
        "prompt_id": _maybe(PROMPT_ID),
        "number": _maybe(NUMBER),
        "front": _maybe({"type": "boolean", "description": "put the prompt at the head of the queue"}),
        "extra_data": _maybe(
            {**OBJ, "description": "{extra_pnginfo: {workflow}} is written into saved PNGs"}
        ),
        "set": _maybe({**OBJ, "description": 'fluxloom: overrides {"<node id or title>.<input>": value}'}),
    },
}
QUEUED = {
    "type": "object",
    "properties": {
        "prompt_id": {"type": "string"},
        "number": {"type": "number"},
        "node_errors": OBJ,
        "warnings": {"type": "array", "items": {"type": "string"}, "description": "fluxloom"},
    },
    "required": ["prompt_id", "number", "node_errors"],
}
CLEAR_DELETE = {
    "type": "object",
    "properties": {
        "clear": {"type": "boolean"},
        "delete": {"type": "array", "items": {"type": "string"}, "description": "prompt ids"},
    },
}
DELETED = {"type": "object", "properties": {"deleted": {"type": "integer"}}, "required": ["deleted"]}
INTERRUPT_BODY = {
    "type": "object",
    "properties": {"prompt_id": _maybe({"type": "string", "description": "only this prompt, if running"})},
}
FREE_BODY = {
    "type": "object",
    "properties": {"unload_models": {"type": "boolean"}, "free_memory": {"type": "boolean"}},
}
PID = _path("prompt_id", "the prompt id returned by POST /prompt")
NAME = _path("name", "workflow name (file stem)", WORKFLOW_NAME)
WF_QUEUE_BODY = {
    "type": "object",
    "properties": {
        "set": _maybe({**OBJ, "description": '{"<node id or title>.<input>": value}'}),
        "client_id": _maybe({"type": "string"}),
        "front": _maybe({"type": "boolean"}),
        "prompt_id": _maybe(PROMPT_ID),
        "number": _maybe(NUMBER),
        "extra_data": _maybe(OBJ),
    },
}
HISTORY_PAGE = (
    "Finished prompts in finish order, as {prompt_id: entry}. Paged as in ComfyUI: `max_items` "
    "(default 200) entries from `offset`; a negative or absent offset means the latest ones. "
    "The server keeps the latest 10,000 (--max-history)."
)

JOB_ID = _path("job_id", "the prompt id")
USERDATA_FILE = _path(
    "file", "path under the user's folder, URL-encoded as one segment (workflows%2FNAME.json)"
)
USERDATA_WRITE = [
    _query("overwrite", "false: refuse an existing file with 409 (default true)"),
    _query("full_info", "true: answer {path, size, modified, created} instead of the path"),
]
TEXT_OR_JSON = {"200": {"description": "the file", "content": {"*/*": {}}}}

# The routes the official ComfyUI frontend calls (--frontend comfyui), in ComfyUI's shapes.
FRONTEND_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/jobs"): {
        "summary": "ComfyUI's jobs list {jobs: [{id, status, priority, create_time, outputs_count, "
        "preview_output, ...}], pagination: {offset, limit, total, has_more}}",
        "parameters": [
            _query(
                "status",
                "comma-separated: pending, in_progress, completed, failed, cancelled",
                {"type": "string", "pattern": rf"^\s*{JOB_STATUSES}?\s*(,\s*{JOB_STATUSES}?\s*)*$"},
            ),
            _query("workflow_id", "only jobs of this UI workflow id"),
            _query(
                "sort_by",
                "default created_at",
                {"type": "string", "enum": ["created_at", "execution_duration"]},
            ),
            _query("sort_order", "default desc", {"type": "string", "enum": ["desc", "asc"]}),
            _query("limit", "page size", {"type": "integer", "minimum": 1}),
            _query("offset", "jobs to skip (negative: none)", kind="integer"),
        ],
        "responses": {**JSON_OK, "400": _json(OBJ, "bad filter: {error}")},
    },
    ("POST", "/api/jobs/cancel"): {
        "summary": "Cancel jobs {job_ids: [...]} (pending: dropped, running: interrupted) → {cancelled}",
        "requestBody": _body(
            {
                "type": "object",
                "required": ["job_ids"],
                "properties": {"job_ids": {"type": "array", "items": {"type": "string"}}},
            },
            required=True,
        ),
        "responses": {**JSON_OK, **BODY_ERRORS, "400": _json(OBJ, "job_ids is not a list of strings")},
    },
    ("GET", "/api/jobs/{job_id}"): {
        "summary": "ComfyUI's job detail: the list entry plus workflow {prompt, extra_data}, outputs, "
        "execution_status",
        "parameters": [JOB_ID],
        "responses": {**JSON_OK, "404": _json(OBJ, "unknown job: {error}")},
    },
    ("POST", "/api/jobs/{job_id}/cancel"): {
        "summary": "Cancel one job → {cancelled} (a finished or unknown job: false)",
        "parameters": [JOB_ID],
        "responses": JSON_OK,
    },
    ("GET", "/users"): {"summary": "Single-user mode: {storage: 'server', migrated}", "responses": JSON_OK},
    ("GET", "/settings"): {"summary": "The user's frontend settings {id: value}", "responses": JSON_OK},
    ("POST", "/settings"): {
        "summary": "Merge settings {id: value} into the user's",
        "requestBody": {"required": True, "content": {"application/json": {"schema": OBJ}}},
        "responses": {**JSON_OK, **BODY_ERRORS, "400": _err("not a JSON object")},
    },
    ("GET", "/settings/{id}"): {
        "summary": "One setting's value (null when unset)",
        "parameters": [_path("id", "setting id")],
        "responses": ANY_OK,
    },
    ("POST", "/settings/{id}"): {
        "summary": "Set one setting (the body is its JSON value; an empty body sets null)",
        "parameters": [_path("id", "setting id")],
        "requestBody": {"required": False, "content": {"application/json": {}}},
        "responses": {**JSON_OK, **BODY_ERRORS},
    },
    ("GET", "/userdata"): {
        "summary": "Files under a user folder (workflows/ is the saved-workflows folder)",
        "parameters": [
            _query(
                "dir", "folder under the user's folder", {"type": "string", "pattern": "[^/]"}, required=True
            ),
            _query("recurse", "true: also subfolders"),
            _query("full_info", "true: [{path, size, modified, created}]"),
            _query("split", "true: [[path, part, part…]]"),
        ],
        "responses": {**LIST_OK, "400": _err("no dir"), "404": _err("no such folder")},
    },
    ("GET", "/v2/userdata"): {
        "summary": "Files and folders under a user folder [{name, path, type, size?, modified?}]",
        "parameters": [_query("path", "folder under the user's folder (default: all)")],
        "responses": {**LIST_OK, "400": _err("not a folder"), "404": _err("no such folder")},
    },
    ("GET", "/userdata/{file}"): {
        "summary": "A user file (as a download; user.css inline, empty when there is none)",
        "parameters": [USERDATA_FILE],
        "responses": {
            **TEXT_OR_JSON,
            "403": _err("path leaves the user folder"),
            "404": _err("no such file"),
        },
    },
    ("POST", "/userdata/{file}"): {
        "summary": "Write a user file (the raw body); workflows/NAME.json is a saved workflow",
        "parameters": [USERDATA_FILE, *USERDATA_WRITE],
        "requestBody": {"required": True, "content": {"*/*": {}}},
        "responses": {
            **PATH_OR_INFO,
            **BODY_ERRORS,
            "403": _err("path leaves the user folder, or a shipped workflow's name"),
            "409": _err("exists (overwrite=false)"),
            "413": _err("too large"),
        },
    },
    ("DELETE", "/userdata/{file}"): {
        "summary": "Delete a user file",
        "parameters": [USERDATA_FILE],
        "responses": {"204": {"description": "deleted"}, "404": _err("no such file")},
    },
    ("POST", "/userdata/{file}/move/{dest}"): {
        "summary": "Move or rename a user file",
        "parameters": [USERDATA_FILE, _path("dest", "new path, URL-encoded as one segment"), *USERDATA_WRITE],
        "responses": {
            **PATH_OR_INFO,
            "404": _err("no such file"),
            "409": _err("dest exists (overwrite=false)"),
        },
    },
    ("GET", "/extensions"): {
        "summary": "Frontend extension scripts: fluxloom's and custom nodes' WEB_DIRECTORY .js files",
        "responses": NAMES_OK,
    },
    ("GET", "/features"): {"summary": "The server's feature flags", "responses": JSON_OK},
    ("GET", "/i18n"): {"summary": "Custom nodes' translations (none)", "responses": JSON_OK},
    ("GET", "/global_subgraphs"): {"summary": "Subgraph blueprints (none)", "responses": JSON_OK},
    ("GET", "/global_subgraphs/{id}"): {
        "summary": "One subgraph blueprint (null: unknown)",
        "parameters": [_path("id", "blueprint id")],
        "responses": ANY_OK,
    },
    ("GET", "/embeddings"): {"summary": "Embedding names in models/embeddings", "responses": NAMES_OK},
    ("GET", "/experiment/models"): {
        "summary": "Model folders [{name, folders, extensions}]",
        "responses": LIST_OK,
    },
    ("GET", "/experiment/models/{folder}"): {
        "summary": "Model files of a folder [{name, pathIndex, modified, created, size}]",
        "parameters": [_path("folder", "model folder name (checkpoints, diffusers, vae, …)")],
        "responses": {**LIST_OK, "404": _err("unknown folder")},
    },
    ("GET", "/view_metadata/{folder_name}"): {
        "summary": "A .safetensors model file's __metadata__",
        "parameters": [_path("folder_name", "model folder name"), _query("filename", "file", required=True)],
        "responses": {**JSON_OK, "404": _err("no such file or no metadata")},
    },
    ("GET", "/workflow_templates"): {
        "summary": "Custom nodes' example workflows by module (none)",
        "responses": JSON_OK,
    },
    ("GET", "/templates/{path}"): {
        "summary": "Templates: index.json, NAME.json (a shipped workflow), NAME-1.png (its thumbnail)",
        "parameters": [_path("path", "file under /templates")],
        "responses": {**TEXT_OR_JSON, "404": _err("no such template file")},
    },
    ("GET", "/user.css"): {"summary": "The user's stylesheet (empty when none)", "responses": TEXT_OR_JSON},
    ("GET", "/extensions/{name}/{path}"): {
        "summary": "A frontend extension's file (custom nodes' WEB_DIRECTORY, fluxloom's web/ext)",
        "parameters": [_path("name", "extension name (module)"), _path("path", "file in its folder")],
        "responses": {**TEXT_OR_JSON, "404": _err("no such file")},
    },
    ("GET", "/internal/logs"): {
        "summary": "The server's recent log lines as one string",
        "responses": {"200": _json({"type": "string"})},
    },
    ("GET", "/internal/logs/raw"): {
        "summary": "The server's recent log lines {entries: [{t, m}], size: {cols, rows}}",
        "responses": JSON_OK,
    },
    ("PATCH", "/internal/logs/subscribe"): {
        "summary": "{clientId, enabled}: stream new log lines to that websocket client as `logs` messages",
        "requestBody": _body(
            {
                "type": "object",
                "required": ["clientId"],
                "properties": {
                    "clientId": {"type": "string", "minLength": 1},
                    "enabled": {"type": "boolean"},
                },
            },
            required=True,
        ),
        "responses": {**JSON_OK, **BODY_ERRORS, "400": _err("no clientId")},
    },
    ("GET", "/internal/folder_paths"): {"summary": "Model folders {name: [path]}", "responses": JSON_OK},
    ("GET", "/internal/files/{directory_type}"): {
        "summary": "File names of the input, output or temp folder, newest first",
        "parameters": [
            _path("directory_type", "which folder", {"type": "string", "enum": ["input", "output", "temp"]})
        ],
        "responses": {**NAMES_OK, "400": _json(OBJ, "not input, output or temp: {error}")},
    },
}

# (method, path) → operation. Paths are ComfyUI's; each is also served under /api.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/prompt"): {
        "summary": "Validate and queue a prompt (body may come without a Content-Type)",
        "requestBody": _body(PROMPT_BODY, required=True),
        "responses": {
            "200": _json(QUEUED, "queued"),
            **BODY_ERRORS,
            "400": _err("not JSON, not this schema, or a prompt that does not validate (node_errors)"),
        },
    },
    ("GET", "/prompt"): {"summary": "Queue size: {exec_info: {queue_remaining}}", "responses": JSON_OK},
    ("GET", "/queue"): {
        "summary": "Running and pending prompts as [number, prompt_id, prompt, extra_data, outputs]",
        "responses": JSON_OK,
    },
    ("POST", "/queue"): {
        "summary": "Clear the pending queue or delete pending prompts by id",
        "requestBody": _body(CLEAR_DELETE),
        "responses": {"200": _json(DELETED), **BODY_ERRORS},
    },
    ("GET", "/history"): {
        "summary": HISTORY_PAGE,
        "parameters": [
            _query("max_items", "page size (default 200)", {"type": "integer", "minimum": 0}),
            _query("offset", "index of the first entry; negative: the latest max_items", {"type": "integer"}),
        ],
        "responses": {**JSON_OK, "400": _err("max_items or offset is not an integer, or max_items < 0")},
    },
    ("GET", "/history/{prompt_id}"): {
        "summary": "One finished prompt ({} while pending or unknown)",
        "parameters": [PID],
        "responses": JSON_OK,
    },
    ("POST", "/history"): {
        "summary": "Clear the history or delete entries by id",
        "requestBody": _body(CLEAR_DELETE),
        "responses": {"200": _json(DELETED), **BODY_ERRORS},
    },
    ("POST", "/interrupt"): {
        "summary": "Interrupt the running prompt (only it, when prompt_id is given)",
        "requestBody": _body(INTERRUPT_BODY),
        "responses": {**JSON_OK, **BODY_ERRORS},
    },
    ("POST", "/free"): {
        "summary": "Release models (unload_models) and clear the output cache (free_memory)",
        "requestBody": _body(FREE_BODY),
        "responses": {**JSON_OK, **BODY_ERRORS},
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
            _query("filename", "file name", {"type": "string", "minLength": 1}, required=True),
            _query("subfolder", "folder inside the type's folder", {"type": "string"}),
            _query(
                "type",
                "which folder (default output)",
                {"type": "string", "enum": ["output", "input", "temp", ""], "description": "empty: output"},
            ),
        ],
        "responses": {
            "200": {
                "description": "the file (anything but raster images, video and audio as a download)",
                "content": {"image/*": {}, "video/*": {}, "audio/*": {}, "application/octet-stream": {}},
            },
            "400": _err("no filename, or an unknown type"),
            "403": _err("path leaves its folder, or a cross-origin request"),
            "404": _err("no such file"),
        },
    },
    ("POST", "/upload/image"): {
        "summary": "Upload an image (multipart: image, overwrite, subfolder, type)",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    # what Pillow opens (and what a browser uploads); anything else is a 400
                    "encoding": {"image": {"contentType": "image/png, image/jpeg, image/webp, image/gif"}},
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        # aiohttp refuses a part header with a control character (tab aside)
                        "propertyNames": {"pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"},
                        "properties": {
                            "image": {"type": "string", "format": "binary", "description": "an image file"},
                            "overwrite": {
                                "type": "string",
                                "description": "true or 1: replace a file of that name",
                            },
                            "subfolder": {"type": "string"},
                            "type": {"type": "string", "enum": ["input", "output", "temp", ""]},
                        },
                    },
                }
            },
        },
        "responses": {
            "200": _json({"type": "object", "properties": {"name": {}, "subfolder": {}, "type": {}}}),
            **BODY_ERRORS,
            "400": _err("not multipart, no image, not an image, or an unknown type"),
            "403": _err("path leaves its folder, or a cross-origin request"),
            "409": _err("a file and a folder of that name collide"),
        },
    },
    ("GET", "/workflows"): {
        "summary": "fluxloom: shipped and saved workflows {workflows: [{name, source, read_only, format}]}",
        "responses": JSON_OK,
    },
    ("GET", "/workflows/{name}"): {
        "summary": "fluxloom: a workflow's JSON as stored",
        "parameters": [NAME],
        "responses": {**JSON_OK, "400": _err("bad workflow name"), "404": _err("no such workflow")},
    },
    ("PUT", "/workflows/{name}"): {
        "summary": "fluxloom: save a workflow (UI or API format); shipped names are read-only",
        "parameters": [NAME],
        "requestBody": _body({**OBJ, "minProperties": 1}, required=True),
        "responses": {
            **JSON_OK,
            **BODY_ERRORS,
            "400": _err("bad workflow name, or the body is not a non-empty JSON object"),
            "403": _err("shipped workflows are read-only"),
        },
    },
    ("DELETE", "/workflows/{name}"): {
        "summary": "fluxloom: delete a saved workflow",
        "parameters": [NAME],
        "responses": {
            **JSON_OK,
            "400": _err("bad workflow name"),
            "403": _err("read-only"),
            "404": _err("no such workflow"),
        },
    },
    ("POST", "/workflows/{name}/queue"): {
        "summary": "fluxloom: queue a saved workflow with overrides",
        "parameters": [NAME],
        "requestBody": _body(WF_QUEUE_BODY),
        "responses": {
            "200": _json(QUEUED, "queued"),
            **BODY_ERRORS,
            "400": _err("bad name or body, or a workflow that does not validate (node_errors)"),
            "404": _err("no such workflow"),
        },
    },
    ("GET", "/ws"): {
        "summary": "Websocket: status, execution_start, execution_cached, executing, progress, executed, "
        "execution_success, execution_error, execution_interrupted as {type, data}. A client whose unsent "
        "messages pass 4 MiB is closed with code 1008 and may reconnect.",
        "parameters": [
            _query("clientId", "id that receives the messages of prompts queued with it", {"type": "string"})
        ],
        "responses": {
            "101": {"description": "switching to the websocket protocol"},
            "400": _err("a plain HTTP request: a websocket client sends the upgrade headers (RFC 6455)"),
        },
    },
    ("GET", "/openapi.json"): {"summary": "This document", "responses": JSON_OK},
    **FRONTEND_OPERATIONS,
}


def describe(routes: list[tuple[str, str]], version: str = "0.1.0") -> dict[str, Any]:
    """The document for the given (method, path) pairs, as the router serves them."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        canonical = path.removeprefix("/api") if path.startswith("/api/") else path
        # A route served only under /api (ComfyUI's jobs API) is described under its own path.
        op = OPERATIONS.get((method, path)) or OPERATIONS.get((method, canonical))
        if op is None:
            raise KeyError(f"route {method} {path} has no OpenAPI description in server/openapi.py")
        op_id = method.lower() + path.replace("/", "_").replace("{", "").replace("}", "").replace(".", "_")
        responses = {**COMMON_ERRORS, **op["responses"]}
        paths.setdefault(path, {})[method.lower()] = {**op, "responses": responses, "operationId": op_id}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fluxloom",
            "version": version,
            "description": "ComfyUI-compatible HTTP API, plus saved workflows, job status and this document. "
            "Every route is also served under /api, except fluxloom's /jobs/{prompt_id} (ComfyUI's jobs API "
            "is /api/jobs) and the static /templates, /extensions and /user.css. "
            "With --token, send 'Authorization: Bearer TOKEN' "
            "or ?token=TOKEN. A method a path does not serve is a 405 with an Allow header.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }


# --- request bodies, checked against the document ---------------------------------------------


def body_schema(method: str, path: str) -> dict[str, Any] | None:
    """The JSON request body schema of a route (`path` as the router names it, /api or not)."""
    canonical = path.removeprefix("/api") if path.startswith("/api/") else path
    op = OPERATIONS.get((method, path)) or OPERATIONS.get((method, canonical))
    content = (op or {}).get("requestBody", {}).get("content", {})
    return content.get("application/json", {}).get("schema")


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
}
CHECKED = frozenset(
    {"type", "properties", "required", "items", "minProperties", "minLength", "maxLength", "pattern"}
    | {"minimum", "exclusiveMinimum", "exclusiveMaximum", "enum", "description", "format"}
)


def check_body(value: Any, schema: dict[str, Any], where: str = "body") -> str | None:
    """The first way `value` breaks `schema` (the subset of JSON Schema this document uses:
    CHECKED), as a message that names the field; None when it conforms."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[k](value) for k in kinds):
            return f"{where} must be {' or '.join(kinds)}, not {_json_type(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {schema['enum']}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{where}.{name} is required"
        if len(value) < schema.get("minProperties", 0):
            return f"{where} must not be empty" if schema["minProperties"] == 1 else f"{where} is too small"
        for name, sub in schema.get("properties", {}).items():
            if name in value and (problem := check_body(value[name], sub, f"{where}.{name}")):
                return problem
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            if problem := check_body(item, schema["items"], f"{where}[{i}]"):
                return problem
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where} must be at least {schema['minLength']} characters"
        if len(value) > schema.get("maxLength", len(value)):
            return f"{where} must be at most {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{where} has characters it may not have (pattern {schema['pattern']})"
    elif _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} must be >= {schema['minimum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{where} must be > {schema['exclusiveMinimum']}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            return f"{where} must be < {schema['exclusiveMaximum']}"
    return None


def _json_type(value: Any) -> str:
    return next(
        (
            k
            for k in ("null", "boolean", "integer", "number", "string", "array", "object")
            if _TYPES[k](value)
        ),
        type(value).__name__,
    )
