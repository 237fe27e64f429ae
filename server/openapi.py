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
            _query("status", "comma-separated: pending, in_progress, completed, failed, cancelled"),
            _query("workflow_id", "only jobs of this UI workflow id"),
            _query("sort_by", "created_at (default) or execution_duration"),
            _query("sort_order", "desc (default) or asc"),
            _query("limit", "page size", kind="integer"),
            _query("offset", "jobs to skip", kind="integer"),
        ],
        "responses": {**JSON_OK, "400": _json(OBJ, "bad filter: {error}")},
    },
    ("POST", "/api/jobs/cancel"): {
        "summary": "Cancel jobs {job_ids: [...]} (pending: dropped, running: interrupted) → {cancelled}",
        "requestBody": {"required": True, "content": {"application/json": {"schema": OBJ}}},
        "responses": {**JSON_OK, "400": _json(OBJ, "job_ids is not a list of strings")},
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
        "responses": JSON_OK,
    },
    ("GET", "/settings/{id}"): {
        "summary": "One setting's value (null when unset)",
        "parameters": [_path("id", "setting id")],
        "responses": JSON_OK,
    },
    ("POST", "/settings/{id}"): {
        "summary": "Set one setting (the body is its JSON value)",
        "parameters": [_path("id", "setting id")],
        "requestBody": {"required": True, "content": {"application/json": {}}},
        "responses": JSON_OK,
    },
    ("GET", "/userdata"): {
        "summary": "Files under a user folder (workflows/ is the saved-workflows folder)",
        "parameters": [
            _query("dir", "folder under the user's folder", required=True),
            _query("recurse", "true: also subfolders"),
            _query("full_info", "true: [{path, size, modified, created}]"),
            _query("split", "true: [[path, part, part…]]"),
        ],
        "responses": {**JSON_OK, "400": _err("no dir"), "404": _err("no such folder")},
    },
    ("GET", "/v2/userdata"): {
        "summary": "Files and folders under a user folder [{name, path, type, size?, modified?}]",
        "parameters": [_query("path", "folder under the user's folder (default: all)")],
        "responses": {**JSON_OK, "404": _err("no such folder")},
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
            **JSON_OK,
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
        "responses": {**JSON_OK, "404": _err("no such file"), "409": _err("dest exists (overwrite=false)")},
    },
    ("GET", "/extensions"): {
        "summary": "Frontend extension scripts: fluxloom's and custom nodes' WEB_DIRECTORY .js files",
        "responses": JSON_OK,
    },
    ("GET", "/features"): {"summary": "The server's feature flags", "responses": JSON_OK},
    ("GET", "/i18n"): {"summary": "Custom nodes' translations (none)", "responses": JSON_OK},
    ("GET", "/global_subgraphs"): {"summary": "Subgraph blueprints (none)", "responses": JSON_OK},
    ("GET", "/global_subgraphs/{id}"): {
        "summary": "One subgraph blueprint (null: unknown)",
        "parameters": [_path("id", "blueprint id")],
        "responses": JSON_OK,
    },
    ("GET", "/embeddings"): {"summary": "Embedding names in models/embeddings", "responses": JSON_OK},
    ("GET", "/experiment/models"): {
        "summary": "Model folders [{name, folders, extensions}]",
        "responses": JSON_OK,
    },
    ("GET", "/experiment/models/{folder}"): {
        "summary": "Model files of a folder [{name, pathIndex, modified, created, size}]",
        "parameters": [_path("folder", "model folder name (checkpoints, diffusers, vae, …)")],
        "responses": {**JSON_OK, "404": _err("unknown folder")},
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
        "responses": JSON_OK,
    },
    ("GET", "/internal/logs/raw"): {
        "summary": "The server's recent log lines {entries: [{t, m}], size: {cols, rows}}",
        "responses": JSON_OK,
    },
    ("PATCH", "/internal/logs/subscribe"): {
        "summary": "{clientId, enabled}: stream new log lines to that websocket client as `logs` messages",
        "requestBody": {"required": True, "content": {"application/json": {"schema": OBJ}}},
        "responses": {**JSON_OK, "400": _err("no clientId")},
    },
    ("GET", "/internal/folder_paths"): {"summary": "Model folders {name: [path]}", "responses": JSON_OK},
    ("GET", "/internal/files/{directory_type}"): {
        "summary": "File names of the input, output or temp folder, newest first",
        "parameters": [_path("directory_type", "input, output or temp")],
        "responses": {**JSON_OK, "400": _json(OBJ, "not input, output or temp: {error}")},
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
        paths.setdefault(path, {})[method.lower()] = {**op, "operationId": op_id}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fluxloom",
            "version": version,
            "description": "ComfyUI-compatible HTTP API, plus saved workflows, job status and this document. "
            "Every route is also served under /api, except fluxloom's /jobs/{prompt_id} (ComfyUI's jobs API "
            "is /api/jobs) and the static /templates, /extensions and /user.css. "
            "With --token, send 'Authorization: Bearer TOKEN' "
            "or ?token=TOKEN.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }
