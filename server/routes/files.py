"""Files: GET /view, POST /upload/image, and the static canvas (web/ at `/`). Every path goes
through `security.safe_join`, so nothing outside its folder is ever read or written."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
from pathlib import Path
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from server.atomic import write_atomic
from server.frontend import frontend_state
from server.routes.common import AppState, BadRequest, state
from server.security import UnsafePath, safe_join

# ES modules must be served with a JavaScript type or browsers refuse to run them; name the
# types here rather than trust the platform's mime table.
STATIC_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
}

FIELD_LIMIT = 1024  # overwrite, subfolder, type
UPLOAD_NAME_MAX = 200

PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>fluxloom</title></head>
<body><h1>fluxloom</h1><p>The canvas (web/index.html) is not installed. The API is running:
see <a href="/openapi.json">/openapi.json</a>.</p></body></html>"""


def _folder(st: AppState, kind: str) -> Path:
    folder = st.folder(kind)
    if folder is None:
        raise BadRequest("invalid_request", f"type must be output, input or temp, not {kind!r}")
    return folder


def _safe(folder: Path, *parts: str) -> Path:
    try:
        return safe_join(folder, *parts)
    except UnsafePath as exc:
        raise BadRequest("forbidden_path", str(exc), 403) from None


async def get_view(request: web.Request) -> web.StreamResponse:
    st = state(request)
    filename = request.query.get("filename")
    if not filename:
        raise BadRequest("invalid_request", "filename is required")
    folder = _folder(st, request.query.get("type") or "output")
    path = _safe(folder, request.query.get("subfolder", ""), filename)
    if not path.is_file() and st.cluster is not None:  # a worker's output this front end lacks
        kind, sub = request.query.get("type") or "output", request.query.get("subfolder", "")
        path = await asyncio.to_thread(st.cluster.fetch_file, kind, sub, filename) or path
    if not path.is_file():
        raise BadRequest("not_found", f"no file {filename!r}", 404)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"X-Content-Type-Options": "nosniff"}
    if kind.split("/")[0] in ("image", "video", "audio") and kind != "image/svg+xml":
        headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(path.name)}"
    else:
        # An image uploaded as `x.html` (or an SVG) would run its script on this server's own
        # origin, where it may queue work: anything but raster media is a download.
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(path.name)}"
    channel, preview = request.query.get("channel", ""), request.query.get("preview", "")
    if kind.startswith("image/") and kind != "image/svg+xml" and (channel in ("rgb", "a") or preview):
        body, kind = await asyncio.to_thread(_image_variant, path, channel, preview)
        return web.Response(body=body, headers={**headers, "Content-Type": kind})
    return web.FileResponse(path, headers=headers)


def _image_variant(path: Path, channel: str, preview: str) -> tuple[bytes, str]:
    """ComfyUI's /view options, which the official frontend uses: `channel=rgb` (no alpha),
    `channel=a` (the alpha channel alone, as the mask editor reads it), `preview=webp;Q` or
    `jpeg;Q` (a smaller copy)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadRequest("invalid_image", f"{path.name} is not a readable image: {exc}") from None
    out = io.BytesIO()
    if preview:
        fmt, _, quality = preview.partition(";")
        fmt = fmt if fmt in ("webp", "jpeg") and channel != "a" else "webp"
        img = img.convert("RGB") if fmt == "jpeg" or channel == "rgb" else img
        img.save(out, format=fmt, quality=int(quality) if quality.isdigit() else 90)
        return out.getvalue(), f"image/{fmt}"
    if channel == "rgb":
        img.convert("RGB").save(out, format="PNG")
    else:
        alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
        mask = Image.new("RGBA", img.size)
        mask.putalpha(alpha)
        mask.save(out, format="PNG")
    return out.getvalue(), "image/png"


def _check_image(data: bytes, max_pixels: int) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise BadRequest("invalid_image", f"image is {img.width}x{img.height}, over the pixel limit")
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # verify() misses truncated pixel data
    except BadRequest:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest("invalid_image", f"upload is not a readable image: {exc}") from None


def _free_name(folder: Path, name: str) -> Path:
    """`name`, or `stem (1).ext`, `stem (2).ext`… when taken (ComfyUI's rule)."""
    stem, ext = os.path.splitext(name)
    candidate, i = folder / name, 1
    while candidate.exists() or candidate.is_symlink():
        candidate, i = folder / f"{stem} ({i}){ext}", i + 1
    return candidate


async def _read_upload(request: web.Request, limit: int) -> tuple[dict[str, str], str | None, bytes | None]:
    """The multipart fields: image (file, at most `limit` bytes), overwrite, subfolder, type."""
    fields: dict[str, str] = {}
    data, filename = None, None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):  # a multipart inside the multipart
            raise BadRequest("invalid_request", "malformed multipart upload: nested multipart part")
        if part.name == "image":
            filename = part.filename
            buf = bytearray()
            while chunk := await part.read_chunk(1 << 16):
                buf += chunk
                if len(buf) > limit:
                    raise BadRequest("upload_too_large", f"upload over {limit} bytes", 413)
            data = bytes(buf)
        elif part.name in ("overwrite", "subfolder", "type"):
            fields[part.name] = (await _read_field(part, FIELD_LIMIT)).decode("utf-8", "replace")
    return fields, filename, data


async def _read_field(part: BodyPartReader, limit: int) -> bytes:
    """A form field, refused past `limit` bytes (a chunked body has no Content-Length to check)."""
    buf = bytearray()
    while chunk := await part.read_chunk(1 << 12):
        buf += chunk
        if len(buf) > limit:
            raise BadRequest("request_too_large", f"form field {part.name!r} over {limit} bytes", 413)
    return part.decode(bytes(buf))


async def post_upload_image(request: web.Request) -> web.Response:
    st = state(request)
    limit = st.limits.max_upload_bytes
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("invalid_request", "upload must be multipart/form-data with an 'image' field")
    if request.content_length is not None and request.content_length > limit + 2**16:  # + form fields
        raise BadRequest("upload_too_large", f"upload over {limit} bytes", 413)
    try:
        fields, filename, data = await _read_upload(request, limit)
    except (ValueError, HttpProcessingError) as exc:  # a malformed multipart body or part header
        raise BadRequest("invalid_request", f"malformed multipart upload: {exc}") from None
    if data is None or not filename:
        raise BadRequest("invalid_request", "no 'image' file in the upload")
    folder = _folder(st, fields.get("type") or "input")
    subfolder = fields.get("subfolder", "")
    name = filename
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise BadRequest("forbidden_path", f"bad file name {filename!r} (no folders, no leading dot)", 403)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8: a file no client could name again
        raise BadRequest("invalid_request", f"file name {name!r} is not valid UTF-8") from None
    if len(name.encode("utf-8", "surrogatepass")) > UPLOAD_NAME_MAX:  # room for " (12)" when taken
        raise BadRequest("invalid_request", f"file name over {UPLOAD_NAME_MAX} bytes: {name[:64]!r}…")
    target = _safe(folder, subfolder, name)
    await asyncio.to_thread(_check_image, data, st.limits.max_image_pixels)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if fields.get("overwrite", "").lower() not in ("true", "1"):
            target = _free_name(target.parent, target.name)
        await asyncio.to_thread(write_atomic, target, data)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        # A file where the subfolder should be, or a folder where the file should be.
        where = f"{subfolder}/{name}" if subfolder else name
        raise BadRequest(
            "path_conflict", f"cannot write {where!r}: a file and a folder collide", 409
        ) from None
    return web.json_response(
        {"name": target.name, "subfolder": subfolder, "type": fields.get("type") or "input"}
    )


async def get_static(request: web.Request) -> web.StreamResponse:
    """The web frontend at `/` (web/, with web/node_modules at /node_modules, or the official
    frontend's static site); anything else is a JSON 404."""
    return await _static_file(request, request.match_info.get("path", ""))


async def _static_file(request: web.Request, rel: str) -> web.StreamResponse:
    st = state(request)
    if request.method not in ("GET", "HEAD"):
        raise BadRequest("not_found", f"no route {request.method} {request.path}", 404)
    if rel in ("", "index.html") and not (st.web_dir / "index.html").is_file():
        return web.Response(text=PLACEHOLDER, content_type="text/html")
    try:
        path = safe_join(st.web_dir, rel or "index.html")
    except UnsafePath:
        raise BadRequest("not_found", f"no route {request.method} {request.path}", 404) from None
    if path.is_dir():
        path = path / "index.html"
    return _file_response(request, path)


def _file_response(request: web.Request, path: Path) -> web.FileResponse:
    if not path.is_file():
        raise BadRequest("not_found", f"no route {request.method} {request.path}", 404)
    headers = {"Cache-Control": "no-cache"}
    kind = STATIC_TYPES.get(path.suffix.lower())
    if kind is not None:
        headers["Content-Type"] = kind + ("; charset=utf-8" if kind.startswith("text/") else "")
    return web.FileResponse(path, headers=headers)


async def get_extension_file(request: web.Request) -> web.StreamResponse:
    """`/extensions/<name>/<path>`: a frontend extension's file (fluxloom's own, or a custom node
    module's WEB_DIRECTORY), never outside its folder; other names are the static site's own
    (the official frontend ships `/extensions/core/...`)."""
    folder = frontend_state(request).extension_dirs.get(request.match_info["name"])
    if folder is None:
        return await _static_file(request, request.path.lstrip("/"))
    try:
        path = safe_join(folder, request.match_info["path"])
    except UnsafePath:
        raise BadRequest("not_found", f"no route {request.method} {request.path}", 404) from None
    return _file_response(request, path)
