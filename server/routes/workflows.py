"""Saved workflows: the shipped ones (repo `workflows/`, read-only) and the user's (data dir),
listed together; a saved workflow can be queued by name with input overrides."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from server.routes.common import AppState, BadRequest, read_json, read_object, state
from server.routes.prompt import enqueue
from server.workflow_io import is_ui_format, shipped_workflows

# A name is a file stem: no separators, no leading dot, so it can never leave its folder.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-()]{0,127}$")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name.endswith(".json"):
        name = name[: -len(".json")]
    if not NAME.match(name) or ".." in name:
        raise BadRequest("invalid_name", f"bad workflow name {name!r} (letters, digits, space, _ . - ( ))")
    return name


def _user_path(st: AppState, name: str) -> Path:
    return st.workflows_dir / f"{name}.json"


def _entry(name: str, path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fmt = "ui" if is_ui_format(data) else "api"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        fmt = "invalid"
    return {
        "name": name,
        "source": source,
        "read_only": source == "shipped",
        "format": fmt,
        "modified": path.stat().st_mtime,
    }


def _find(st: AppState, name: str) -> tuple[Path, str] | None:
    shipped = shipped_workflows()
    if name in shipped:
        return shipped[name], "shipped"
    path = _user_path(st, name)
    if path.is_file() and not path.is_symlink():
        return path, "user"
    return None


async def list_workflows(request: web.Request) -> web.Response:
    st = state(request)
    entries = [_entry(n, p, "shipped") for n, p in shipped_workflows().items()]
    shipped = {e["name"] for e in entries}
    if st.workflows_dir.is_dir():
        for p in sorted(st.workflows_dir.glob("*.json")):
            if p.stem not in shipped and NAME.match(p.stem) and p.is_file() and not p.is_symlink():
                entries.append(_entry(p.stem, p, "user"))
    return web.json_response({"workflows": entries})


def _load(st: AppState, name: str) -> tuple[Any, str]:
    found = _find(st, name)
    if found is None:
        raise BadRequest("not_found", f"no workflow {name!r}", 404)
    path, source = found
    try:
        return json.loads(path.read_text(encoding="utf-8")), source
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("invalid_workflow", f"workflow {name!r} is not readable JSON: {exc}", 500) from None


async def get_workflow(request: web.Request) -> web.Response:
    data, _ = _load(state(request), _name(request))
    return web.json_response(data)


async def put_workflow(request: web.Request) -> web.Response:
    st = state(request)
    name = _name(request)
    if name in shipped_workflows():
        raise BadRequest(
            "read_only", f"{name!r} is a shipped workflow and read-only; save it under another name", 403
        )
    data = await read_json(request)
    if not isinstance(data, dict) or not data:
        raise BadRequest("invalid_workflow", "a workflow must be a non-empty JSON object (UI or API format)")
    st.workflows_dir.mkdir(parents=True, exist_ok=True)
    path = _user_path(st, name)
    tmp = path.with_name(f".{name}.json.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
    return web.json_response(_entry(name, path, "user"))


async def delete_workflow(request: web.Request) -> web.Response:
    st = state(request)
    name = _name(request)
    if name in shipped_workflows():
        raise BadRequest("read_only", f"{name!r} is a shipped workflow and read-only", 403)
    path = _user_path(st, name)
    if not path.is_file():
        raise BadRequest("not_found", f"no workflow {name!r}", 404)
    path.unlink()
    return web.json_response({"deleted": name})


async def queue_workflow(request: web.Request) -> web.Response:
    """Body `{"set": {"<node id or title>.<input>": value}, "client_id"?, "front"?, "prompt_id"?}`."""
    st = state(request)
    name = _name(request)
    body = await read_object(request)
    data, _ = _load(st, name)
    return await enqueue(st, data, body, body.get("set"))
