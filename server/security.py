"""What keeps a local server local: bind rules, an access token, origin checks, safe paths.

- Loopback by default; another address needs `--token` unless `--allow-unauthenticated`.
- With a token, every request needs `Authorization: Bearer TOKEN`, `?token=TOKEN`, or the cookie
  that a successful `?token=` sets (so the canvas's own module and websocket requests work).
- State-changing requests (and websocket upgrades) from another origin get 403: a web page the
  user visits must not queue work on their local server. Without a token, a loopback server also
  refuses Host names that are not loopback (DNS rebinding).
- `safe_join` keeps file access inside a folder: no NUL bytes, absolute paths, `..`, or
  symlinks that lead out.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from server import events

log = logging.getLogger("fluxloom.security")

TOKEN_COOKIE = "fluxloom_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SecurityConfig:
    host: str = "127.0.0.1"
    token: str | None = None
    allow_unauthenticated: bool = False


class BindRefused(ValueError):
    """Listening on this address would expose the server without an access token."""


def is_loopback(host: str) -> bool:
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(cfg: SecurityConfig) -> str | None:
    """Raise BindRefused for an exposed address without a token; return a warning when the user
    opted out of authentication."""
    if is_loopback(cfg.host) or cfg.token:
        return None
    if cfg.allow_unauthenticated:
        return (
            f"listening on {cfg.host} WITHOUT an access token (--allow-unauthenticated): anyone who can "
            "reach this address can run workflows and read your images"
        )
    raise BindRefused(
        f"refusing to listen on {cfg.host} without an access token: pass --token SECRET (clients then send "
        "'Authorization: Bearer SECRET'), or --allow-unauthenticated to expose it anyway"
    )


def json_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response(events.error_body(events.error_item(kind, message)), status=status)


def _host_name(host_header: str) -> str:
    try:
        return urlsplit("//" + host_header).hostname or ""
    except ValueError:  # e.g. "[::1" (a malformed IPv6 literal): no name, so not loopback
        return ""


def _origin_matches(request: web.Request, origin: str) -> bool:
    """Same scheme-less netloc as the Host the request was sent to."""
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:  # a malformed Origin matches nothing
        return False
    return bool(parts.netloc) and parts.netloc.lower() == (request.host or "").lower()


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


def make_middleware(cfg: SecurityConfig) -> Callable:
    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        if cfg.token:
            given = _token_of(request)
            # surrogatepass: header bytes that are not UTF-8 arrive as surrogates; they compare unequal.
            if given is None or not hmac.compare_digest(
                given.encode("utf-8", "surrogatepass"), cfg.token.encode("utf-8", "surrogatepass")
            ):
                return json_error(
                    401, "unauthorized", "an access token is required (Authorization: Bearer …)"
                )
        elif is_loopback(cfg.host) and not is_loopback(_host_name(request.host or "")):
            # A name that resolves to 127.0.0.1 for a page elsewhere: DNS rebinding.
            return json_error(403, "forbidden_host", f"Host {request.host!r} is not this loopback server")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method not in SAFE_METHODS or upgrade:
            origin = request.headers.get("Origin")
            if origin is not None and not _origin_matches(request, origin):
                return json_error(403, "forbidden_origin", f"cross-origin request from {origin} refused")
            if request.headers.get("Sec-Fetch-Site") == "cross-site":
                return json_error(403, "forbidden_origin", "cross-site request refused")
        response = await handler(request)
        if cfg.token and request.query.get("token") and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, cfg.token, httponly=True, samesite="Strict", path="/")
        return response

    return security


NAME_MAX, PATH_MAX = 255, 3072  # one file name; the part below the folder (Linux: 255, 4096 in all)


class UnsafePath(ValueError):
    """A requested path would leave its folder."""


def safe_join(base: Path, *parts: str) -> Path:
    """`base/parts...`, refusing anything that escapes `base` (also through symlinks)."""
    root = Path(base).resolve()
    for part in parts:
        if "\x00" in part:
            raise UnsafePath("NUL byte in path")
        if part.startswith(("/", "\\")) or (len(part) > 1 and part[1] == ":"):
            raise UnsafePath(f"absolute path {part!r} refused")
        segments = part.replace("\\", "/").split("/")
        if any(seg == ".." for seg in segments):
            raise UnsafePath(f"'..' in {part!r} refused")
        # The OS refuses these with ENAMETOOLONG, which would surface as a 500.
        if any(len(seg.encode("utf-8", "surrogatepass")) > NAME_MAX for seg in segments):
            raise UnsafePath(f"a name in {part[:64]!r}… is over {NAME_MAX} bytes")
    if sum(len(p.encode("utf-8", "surrogatepass")) + 1 for p in parts) > PATH_MAX:
        raise UnsafePath(f"path over {PATH_MAX} bytes refused")
    target = root.joinpath(*[p for p in parts if p])
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePath("path leads outside its folder")
    return resolved
