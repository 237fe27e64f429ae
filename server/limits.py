"""Every size limit and timeout of the server in one place, and the two pieces that enforce the
timeouts aiohttp does not: a request head must arrive in time (aiohttp's keep-alive timer, which
also runs while a request head is incomplete) and a request body must keep arriving (a
middleware with a minimum rate, as Apache's mod_reqtimeout `body=…,MinRate=…`).

`docs/api.md` ("Limits") lists the same values; `fluxloom serve` sets the timeouts, the
history cap and the node cap from its options.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from server.security import json_error
from server.validation import DEFAULT_MAX_NODES

MiB = 2**20


@dataclass(frozen=True)
class Limits:
    # Sizes
    max_json_bytes: int = 16 * MiB  # a POST /prompt body (workflows with embedded text)
    max_upload_bytes: int = 64 * MiB  # one uploaded image
    max_image_pixels: int = 16384 * 16384
    max_nodes: int = DEFAULT_MAX_NODES  # nodes in one prompt (--max-nodes)
    # Time to send a request: the whole head within `header_timeout` of the connection opening
    # or of the previous response (so it is also the idle keep-alive timeout); the body at
    # `body_min_rate` bytes/s on average once `body_timeout` seconds have passed.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 16 * 2**10
    # A websocket client that has more than this many bytes of messages waiting (it reads
    # slower than the server sends) is dropped with close code 1008; it may reconnect.
    ws_outbox_bytes: int = 4 * MiB
    ws_close_grace: float = 5.0  # seconds it has to take its close frame before the socket is cut
    # History: finished prompts kept (oldest dropped first, as ComfyUI's 10,000), and the page
    # GET /history answers without `max_items`.
    max_history: int = 10_000
    history_page: int = 200


class OneLineClientErrors(logging.Filter):
    """A malformed request (a NUL byte in a header, a bad request line) is the client's fault:
    aiohttp logs it with a traceback per request; make it one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            reason = " ".join(str(exc.message or exc).split())[:200]
            record.msg, record.args = "bad request from %s: %s %s", (remote, exc.code, reason)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


HTTP_LOG = logging.getLogger("fluxloom.http")
HTTP_LOG.addFilter(OneLineClientErrors())


def handler_args(limits: Limits) -> dict[str, Any]:
    """aiohttp RequestHandler settings (`web.Application(handler_args=...)`, so they hold for
    `run_app` and for any AppRunner alike)."""
    return {
        # aiohttp starts this timer when a connection opens and after each response, and closes
        # the connection if no complete request head has arrived when it fires.
        "keepalive_timeout": limits.header_timeout,
        # After an early answer (413, 408) aiohttp reads and drops the rest of a body this long.
        "lingering_time": min(10.0, limits.header_timeout),
        "logger": HTTP_LOG,
    }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body_deadline(limits: Limits) -> Callable:
    """Answer 408 (and close) when a request body arrives slower than `body_min_rate` bytes/s
    after the first `body_timeout` seconds, whatever the handler was waiting for."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = request.content
        if not request.body_exists or body.is_eof():
            return await handler(request)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(None) as deadline:

                def check() -> None:
                    if body.is_eof():
                        return
                    due = started + limits.body_timeout + body.total_bytes / max(1, limits.body_min_rate)
                    if loop.time() >= due:
                        deadline.reschedule(loop.time())  # cancels the handler now
                    else:
                        timer[0] = loop.call_at(due, check)

                timer = [loop.call_at(started + limits.body_timeout, check)]
                try:
                    return await handler(request)
                finally:
                    timer[0].cancel()
        except TimeoutError:
            if not deadline.expired():
                raise
        response = json_error(
            408,
            "request_timeout",
            f"request body too slow: {body.total_bytes} bytes in {loop.time() - started:.1f} s "
            f"(at least {limits.body_min_rate} bytes/s after {limits.body_timeout:g} s)",
        )
        response.force_close()
        return response

    return guard
