"""The official frontend's per-user storage, in ComfyUI's shapes (single-user mode, user
`default`): `/users`, `/settings[/{id}]`, `/userdata` (list, read, write, move, delete) and
`/v2/userdata`.

Files live in `DATA/user/default/`, except `workflows/`: that folder IS fluxloom's saved-workflows
folder (`DATA/workflows`), so a workflow saved from the official frontend is listed by
`GET /workflows` and can be queued by name, and a workflow saved with `PUT /workflows/{name}`
shows up in the frontend's workflow browser. Shipped workflows are read-only there too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from server.atomic import write_atomic
from server.frontend import FrontendState, frontend_state
from server.routes.common import BadRequest, read_json, state
from server.security import UnsafePath, safe_join
from server.workflow_io import shipped_workflows

log = logging.getLogger("fluxloom.userdata")

SETTINGS_FILE = "comfy.settings.json"
WORKFLOWS = "workflows"
USER_CSS = "user.css"
# Types a browser could run as a page on this origin: served as downloads only.
ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")

# --- paths ---------------------------------------------------------------------------------------


def resolve_path(fs: FrontendState, rel: str) -> Path:
    """The file behind a userdata path; `workflows/...` is the saved-workflows folder."""
    if not rel:
        raise BadRequest("invalid_request", "a user data path is required")
    rel = rel.replace("\\", "/")
    head, _, rest = rel.partition("/")
    root, inner = (fs.workflows_dir, rest) if head == WORKFLOWS else (fs.user_dir, rel)
    try:
        return safe_join(root, inner)
    except UnsafePath as exc:
        raise BadRequest("forbidden_path", f"user data path {rel!r}: {exc}", 403) from None


def _rel(fs: FrontendState, path: Path) -> str:
    """A file's userdata path (the inverse of `resolve_path`)."""
    workflows = fs.workflows_dir.resolve()
    if path == workflows or workflows in path.parents:
        return "/".join((WORKFLOWS, *path.relative_to(workflows).parts))
    return path.relative_to(fs.user_dir.resolve()).as_posix()


class ReadOnly(BadRequest):
    """403 whose reason phrase says why: the frontend shows `status statusText` in its toast."""

    def response(self) -> web.Response:
        response = super().response()
        response.set_status(self.status, self.message)
        return response


def _check_writable(fs: FrontendState, path: Path) -> None:
    """A shipped workflow's name under workflows/ is taken: saving there would be shadowed by it."""
    workflows = fs.workflows_dir.resolve()
    if path.parent == workflows and path.suffix == ".json" and path.stem in shipped_workflows():
        raise ReadOnly(
            "read_only", f"{path.stem} is a shipped workflow (read-only): save it under another name", 403
        )


def _file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": path.relative_to(relative_to).as_posix(),
        "size": st.st_size,
        "modified": int(st.st_mtime * 1000),
        "created": int(st.st_ctime * 1000),
    }


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    return default if raw is None else raw.lower() == "true"


# --- /users and /settings ------------------------------------------------------------------------


async def get_users(request: web.Request) -> web.Response:
    """Single-user mode: no user list, so the frontend never asks who is there."""
    fs = frontend_state(request)
    return web.json_response({"storage": "server", "migrated": fs.user_dir.is_dir()})


def _read_settings(fs: FrontendState) -> dict[str, Any]:
    path = fs.user_dir / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.error("the settings file %s is unreadable (%s); starting from defaults", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(frontend_state(request)))


async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(frontend_state(request)).get(request.match_info["id"]))


async def _update_settings(fs: FrontendState, changes: dict[str, Any]) -> None:
    # The frontend posts settings one by one, several at once: read-modify-write under a lock.
    async with fs.settings_lock:
        settings = {**_read_settings(fs), **changes}
        write_atomic(fs.user_dir / SETTINGS_FILE, json.dumps(settings, indent=2).encode("utf-8"))


async def post_settings(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("invalid_json", "settings must be a JSON object of {id: value}")
    await _update_settings(frontend_state(request), body)
    return web.json_response({"saved": sorted(body)})


async def post_setting(request: web.Request) -> web.Response:
    setting_id = request.match_info["id"]
    value = await read_json(request)
    await _update_settings(frontend_state(request), {setting_id: value})
    return web.json_response({"saved": [setting_id]})


# --- /userdata -----------------------------------------------------------------------------------


def _listing(fs: FrontendState, directory: str, recurse: bool) -> list[tuple[Path, Path]]:
    """(file, the folder it is listed relative to) under a userdata folder; hidden names skipped,
    as ComfyUI's glob does."""
    root = resolve_path(fs, directory)
    if not root.is_dir():
        raise BadRequest("not_found", f"no user data folder {directory!r}", 404)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recurse else []
        found += [(Path(dirpath) / f, root) for f in sorted(filenames) if not f.startswith(".")]
    if root == fs.user_dir.resolve() and recurse and fs.workflows_dir.is_dir():
        # The user folder's `workflows/` lives elsewhere (the saved-workflows folder).
        for path, _ in _listing(fs, WORKFLOWS, recurse):
            found.append((path, root))
    return found


async def list_userdata(request: web.Request) -> web.Response:
    """`?dir=` (required) `&recurse=&full_info=&split=`: the files under a folder."""
    fs = frontend_state(request)
    directory = request.query.get("dir", "").strip("/")
    if not directory:
        raise BadRequest("invalid_request", "dir is required")
    recurse, full_info = _flag(request, "recurse", False), _flag(request, "full_info", False)
    split = _flag(request, "split", False)
    out: list[Any] = []
    for path, base in _listing(fs, directory, recurse):
        if path.is_symlink() or not path.is_file():
            continue
        if full_info:
            info = _file_info(path, base)
            if base == fs.user_dir.resolve():
                info["path"] = _rel(fs, path)
            out.append(info)
            continue
        rel = _rel(fs, path) if base == fs.user_dir.resolve() else path.relative_to(base).as_posix()
        out.append([rel, *rel.split("/")] if split else rel)
    return web.json_response(out)


def _v2_entry(fs: FrontendState, path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": path.name, "path": _rel(fs, path)}
    if path.is_dir():
        return {**entry, "type": "directory"}
    st = path.stat()
    return {**entry, "type": "file", "size": st.st_size, "modified": st.st_mtime}


async def list_userdata_v2(request: web.Request) -> web.Response:
    """`?path=`: files and folders under a folder (all levels), folders first."""
    fs = frontend_state(request)
    rel = request.query.get("path", "").strip("/")
    root = resolve_path(fs, rel) if rel else fs.user_dir.resolve()
    if not root.exists():
        if not rel:
            return web.json_response([])
        raise BadRequest("not_found", f"no user data folder {rel!r}", 404)
    if not root.is_dir():
        raise BadRequest("invalid_request", f"{rel!r} is not a folder")
    tops = [root]
    if not rel and fs.workflows_dir.is_dir():
        tops.append(fs.workflows_dir.resolve())
    entries = [_v2_entry(fs, p) for p in tops[1:]]
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in (*dirnames, *filenames):
                path = Path(dirpath) / name
                if not path.is_symlink():
                    entries.append(_v2_entry(fs, path))
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
    return web.json_response(entries)


def user_css_response(fs: FrontendState) -> web.StreamResponse:
    """The user's stylesheet; the frontend's index.html always links it, so no file is an empty
    stylesheet rather than a 404."""
    path = resolve_path(fs, USER_CSS)
    if not path.is_file():
        return web.Response(text="", content_type="text/css")
    return web.FileResponse(path, headers={"Content-Type": "text/css", "X-Content-Type-Options": "nosniff"})


async def get_userdata(request: web.Request) -> web.StreamResponse:
    fs = frontend_state(request)
    rel = request.match_info["file"]
    path = resolve_path(fs, rel)
    if rel == USER_CSS:
        return user_css_response(fs)
    if not path.is_file():
        raise BadRequest("not_found", f"no user data file {rel!r}", 404)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind in ACTIVE_TYPES or kind.startswith("text/javascript"):
        kind = "application/octet-stream"
    headers = {"Content-Type": kind, "X-Content-Type-Options": "nosniff", "Content-Disposition": "attachment"}
    return web.FileResponse(path, headers=headers)


async def _read_body(request: web.Request) -> bytes:
    limit = state(request).limits.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest("request_too_large", f"user data file over {limit} bytes", 413)
    body = bytearray()
    while chunk := await request.content.read(1 << 16):
        body += chunk
        if len(body) > limit:
            raise BadRequest("request_too_large", f"user data file over {limit} bytes", 413)
    return bytes(body)


def _answer(fs: FrontendState, path: Path, full_info: bool) -> web.Response:
    if not full_info:
        return web.json_response(_rel(fs, path))
    info = _file_info(path, path.parent)
    return web.json_response({**info, "path": _rel(fs, path)})


async def post_userdata(request: web.Request) -> web.Response:
    """Write a file (the raw body). `?overwrite=false` refuses an existing file with 409."""
    fs = frontend_state(request)
    path = resolve_path(fs, request.match_info["file"])
    _check_writable(fs, path)
    if not _flag(request, "overwrite", True) and path.exists():
        raise BadRequest("file_exists", f"user data file {request.match_info['file']!r} already exists", 409)
    if path.is_dir():
        raise BadRequest("path_conflict", f"{request.match_info['file']!r} is a folder", 409)
    body = await _read_body(request)
    try:
        await asyncio.to_thread(write_atomic, path, body)
    except (NotADirectoryError, FileExistsError):
        raise BadRequest(
            "path_conflict", f"cannot write {request.match_info['file']!r}: a file is in the way", 409
        ) from None
    return _answer(fs, path, _flag(request, "full_info", False))


async def delete_userdata(request: web.Request) -> web.Response:
    fs = frontend_state(request)
    path = resolve_path(fs, request.match_info["file"])
    if not path.is_file():
        raise BadRequest("not_found", f"no user data file {request.match_info['file']!r}", 404)
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    """Rename/move a file; `?overwrite=false` (the frontend's default) refuses an existing target."""
    fs = frontend_state(request)
    source = resolve_path(fs, request.match_info["file"])
    dest = resolve_path(fs, request.match_info["dest"])
    if not source.is_file():
        raise BadRequest("not_found", f"no user data file {request.match_info['file']!r}", 404)
    _check_writable(fs, dest)
    if not _flag(request, "overwrite", True) and dest.exists():
        raise BadRequest("file_exists", f"user data file {request.match_info['dest']!r} already exists", 409)
    dest.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.move, source, dest)
    return _answer(fs, dest, _flag(request, "full_info", False))
