"""What the official ComfyUI frontend asks about the server besides nodes and the queue, in
ComfyUI's shapes: extensions, feature flags, translations, subgraph blueprints, embeddings,
model folders and files, safetensors metadata, templates (fluxloom's shipped workflows) and the
user's stylesheet. Unknown names answer what ComfyUI answers (404, or `null` where it does)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from server import templates
from server.frontend import frontend_state
from server.routes.common import BadRequest, state
from server.routes.userdata import user_css_response
from server.security import UnsafePath, safe_join

# ComfyUI's model file extensions; `diffusers` holds pipeline folders (model_index.json).
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
GGUF = (".gguf",)
# The model folders fluxloom reads (ComfyUI's names and layout) and the file types each holds.
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": MODEL_EXTENSIONS,
    "clip": MODEL_EXTENSIONS + GGUF,
    "diffusers": ("folder",),
    "diffusion_models": MODEL_EXTENSIONS + GGUF,
    "embeddings": MODEL_EXTENSIONS,
    "loras": MODEL_EXTENSIONS,
    "text_encoders": MODEL_EXTENSIONS + GGUF,
    "unet": MODEL_EXTENSIONS + GGUF,
    "vae": MODEL_EXTENSIONS,
}
SAFETENSORS_HEADER_MAX = 1 << 20  # ComfyUI reads at most 1 MiB of header for /view_metadata


def server_features(max_upload_bytes: int) -> dict[str, Any]:
    """The feature flags fluxloom answers at `/api/features` and on the websocket. Only what the
    server really does: binary previews with metadata (server/previews.py); no asset database,
    no node replacements, no ComfyUI-Manager."""
    return {
        "supports_preview_metadata": True,
        "supports_model_type_tags": False,
        "max_upload_size": max_upload_bytes,
        "node_replacements": False,
        "assets": False,
    }


async def get_extensions(request: web.Request) -> web.Response:
    fs = frontend_state(request)
    return web.json_response(await asyncio.to_thread(fs.extension_urls))


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(server_features(state(request).limits.max_upload_bytes))


async def get_i18n(request: web.Request) -> web.Response:
    """Custom nodes' translations: fluxloom's nodes ship none (their names are the English)."""
    return web.json_response({})


async def get_global_subgraphs(request: web.Request) -> web.Response:
    """Subgraph blueprints: fluxloom ships none."""
    return web.json_response({})


async def get_global_subgraph(request: web.Request) -> web.Response:
    return web.json_response(None)  # what ComfyUI answers for an unknown id


async def get_workflow_templates(request: web.Request) -> web.Response:
    """Custom nodes' example workflows by module: none (fluxloom's own are the core templates)."""
    return web.json_response({})


def _models_dir(request: web.Request) -> Path:
    return Path(state(request).runtime.env.models_dir)


def _folder_files(folder: Path, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """ComfyUI's model list entries: {name, pathIndex, modified, created, size}; a diffusers
    pipeline folder counts as one model."""
    if not folder.is_dir():
        return []
    out = []
    if kinds == ("folder",):
        for pipeline in sorted(p for p in folder.iterdir() if (p / "model_index.json").is_file()):
            files = [f for f in pipeline.rglob("*") if f.is_file()]
            st = pipeline.stat()
            size = sum(f.stat().st_size for f in files)
            out.append(
                {
                    "name": pipeline.name,
                    "pathIndex": 0,
                    "modified": st.st_mtime,
                    "created": st.st_ctime,
                    "size": size,
                }
            )
        return out
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.suffix.lower() not in kinds:
                continue
            st = path.stat()
            rel = path.relative_to(folder).as_posix()
            out.append(
                {
                    "name": rel,
                    "pathIndex": 0,
                    "modified": st.st_mtime,
                    "created": st.st_ctime,
                    "size": st.st_size,
                }
            )
    return out


async def get_model_folders(request: web.Request) -> web.Response:
    root = _models_dir(request)
    folders = [
        {"name": name, "folders": [str((root / name).resolve())], "extensions": sorted(kinds)}
        for name, kinds in MODEL_FOLDERS.items()
    ]
    return web.json_response(folders)


async def get_model_files(request: web.Request) -> web.Response:
    name = request.match_info["folder"]
    kinds = MODEL_FOLDERS.get(name)
    if kinds is None:
        raise BadRequest("not_found", f"no model folder {name!r} (known: {', '.join(MODEL_FOLDERS)})", 404)
    files = await asyncio.to_thread(_folder_files, _models_dir(request) / name, kinds)
    return web.json_response(files)


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            return None
        n = struct.unpack("<Q", head)[0]
        if not 0 < n <= SAFETENSORS_HEADER_MAX:
            return None
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


async def get_view_metadata(request: web.Request) -> web.Response:
    """A `.safetensors` model file's `__metadata__` (training info, trigger words…); 404 when the
    folder, the file or the metadata is missing, as in ComfyUI."""
    name = request.match_info["folder_name"]
    filename = request.query.get("filename", "")
    if name not in MODEL_FOLDERS or not filename.endswith(".safetensors"):
        raise BadRequest("not_found", f"no safetensors file {filename!r} in {name!r}", 404)
    try:
        path = safe_join(_models_dir(request) / name, filename)
    except UnsafePath as exc:
        raise BadRequest("forbidden_path", str(exc), 403) from None
    meta = await asyncio.to_thread(_safetensors_metadata, path) if path.is_file() else None
    if meta is None:
        raise BadRequest("not_found", f"{name}/{filename} has no safetensors metadata", 404)
    return web.json_response(meta)


async def get_embeddings(request: web.Request) -> web.Response:
    files = await asyncio.to_thread(
        _folder_files, _models_dir(request) / "embeddings", MODEL_FOLDERS["embeddings"]
    )
    return web.json_response([os.path.splitext(f["name"])[0] for f in files])


# --- /templates (static paths, as the frontend's fileURL builds them; no /api alias) ----------------


async def get_template_file(request: web.Request) -> web.StreamResponse:
    """`index.json` (also `index.<locale>.json`: the titles are names, not words),
    `index_logo.json`, `NAME.json` (the workflow) and `NAME-1.png` (its thumbnail)."""
    rel = request.match_info["path"]
    if rel == "index.json" or (rel.startswith("index.") and rel.endswith(".json") and rel.count(".") == 2):
        return web.json_response(await asyncio.to_thread(templates.index))
    if rel == "index_logo.json":
        return web.json_response({})  # provider logos: fluxloom's templates have none
    available = await asyncio.to_thread(templates.template_workflows)
    if rel.endswith(".json") and rel[: -len(".json")] in available:
        return web.FileResponse(available[rel[: -len(".json")]], headers={"Content-Type": "application/json"})
    if rel.endswith("-1.png"):
        png = await asyncio.to_thread(templates.thumbnail, rel[: -len("-1.png")])
        if png is not None:
            return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-cache"})
    raise BadRequest("not_found", f"no template file {rel!r}", 404)


async def get_user_css(request: web.Request) -> web.StreamResponse:
    """`/user.css`: the user's stylesheet (userdata `user.css`), empty when there is none."""
    return user_css_response(frontend_state(request))
