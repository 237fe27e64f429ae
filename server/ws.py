"""The websocket hub: `GET /ws?clientId=` connections, ComfyUI's `{"type", "data"}` messages.

Per-prompt messages go to the client that queued the prompt (its `client_id`); prompts queued
without one are announced to everybody, as ComfyUI does. All methods run on the event loop; the
worker thread reaches them through `loop.call_soon_threadsafe`. Live previews leave as ComfyUI's
binary frames (server/previews.py): with their node's id to clients that said
`supports_preview_metadata` in their `feature_flags`, the older frame without it to the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from server import events
from server.previews import PREVIEW_EVENT

log = logging.getLogger("fluxloom.ws")

MAX_BACKLOG = 10_000  # unsent messages per connection before it is dropped
PREVIEW_BACKLOG = 8  # a client with more unsent messages misses previews (they are soon stale)


class Hub:
    def __init__(
        self, status: Callable[[], dict[str, Any]], features: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self._status = status  # builds the `status` payload (queue_remaining)
        self._features = features  # the server's feature flags, for ComfyUI's `feature_flags` handshake
        self._clients: dict[str, set[web.WebSocketResponse]] = {}
        # One outbox per connection, drained by one task, so messages keep their order.
        self._outbox: dict[web.WebSocketResponse, asyncio.Queue[str | bytes | None]] = {}
        self._preview_metadata: set[web.WebSocketResponse] = set()  # clients that take type 4 frames
        self._status_due = False
        self.last_running: dict[str, Any] = {}  # client_id, node, prompt_id of the running prompt

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._clients.values())

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._outbox[ws] = outbox
        outbox.put_nowait(self._encode("status", {**self._status(), "sid": client_id}))
        # A client that reconnects while its prompt runs learns which node is executing.
        running = self.last_running
        if running.get("client_id") == client_id and running.get("node") is not None:
            outbox.put_nowait(self._encode("executing", running["data"]))
        self._clients.setdefault(client_id, set()).add(ws)
        sender = asyncio.ensure_future(self._drain(ws, outbox))
        try:
            first = True
            async for msg in ws:  # clients may send; nothing they send changes state
                if msg.type == WSMsgType.ERROR:
                    break
                if first and msg.type == WSMsgType.TEXT:
                    self._answer_feature_flags(msg.data, ws, outbox)
                first = False
        finally:
            outbox.put_nowait(None)
            self._outbox.pop(ws, None)
            self._preview_metadata.discard(ws)
            await sender
            conns = self._clients.get(client_id)
            if conns is not None:
                conns.discard(ws)
                if not conns:
                    del self._clients[client_id]
        return ws

    def _answer_feature_flags(
        self, text: str, ws: web.WebSocketResponse, outbox: asyncio.Queue[str | bytes | None]
    ) -> None:
        """ComfyUI's handshake: a client whose first message is `feature_flags` gets the
        server's flags back (the official frontend waits for them); its own flags say which
        preview frames it reads."""
        try:
            message = json.loads(text)
            kind, flags = message.get("type"), message.get("data")
        except (ValueError, AttributeError):
            return
        if kind != "feature_flags":
            return
        if isinstance(flags, dict) and flags.get("supports_preview_metadata") is True:
            self._preview_metadata.add(ws)
        if self._features is not None:
            outbox.put_nowait(self._encode("feature_flags", self._features()))

    @staticmethod
    def _encode(event: str, data: dict[str, Any]) -> str:
        return json.dumps({"type": event, "data": data})

    def send(self, event: str, data: dict[str, Any], client_id: str | None = None) -> None:
        """Queue a message to one client (or everybody when `client_id` is None)."""
        if event == PREVIEW_EVENT:
            self._send_preview(data["metadata"], data["image"], client_id)
            return
        if event == "executing":
            self.last_running = {"client_id": client_id, "node": data.get("node"), "data": data}
        text = self._encode(event, data)
        for ws in self._targets(client_id):
            outbox = self._outbox.get(ws)
            if outbox is None:
                continue
            if outbox.qsize() >= MAX_BACKLOG:  # a client that stopped reading: let it go
                log.warning("websocket client %s is not reading; closing it", client_id)
                self._outbox.pop(ws, None)
                asyncio.ensure_future(ws.close(code=1008, message=b"not reading"))
                continue
            outbox.put_nowait(text)

    def _targets(self, client_id: str | None) -> list[web.WebSocketResponse]:
        if client_id is not None:
            return list(self._clients.get(client_id, ()))
        return [ws for conns in self._clients.values() for ws in conns]

    def wants_previews(self, client_id: str | None) -> bool:
        """Whether a preview of this client's prompt would reach anybody (called from the
        worker thread: reads that are atomic under the GIL only)."""
        return bool(self._clients.get(client_id) if client_id is not None else self._clients)

    def _send_preview(self, metadata: dict[str, Any], jpeg: bytes, client_id: str | None) -> None:
        frames: dict[bool, bytes] = {}
        for ws in self._targets(client_id):
            outbox = self._outbox.get(ws)
            if outbox is None or outbox.qsize() > PREVIEW_BACKLOG:
                continue
            typed = ws in self._preview_metadata
            if typed not in frames:
                frames[typed] = events.preview_frame(jpeg, metadata if typed else None)
            outbox.put_nowait(frames[typed])

    @staticmethod
    async def _drain(ws: web.WebSocketResponse, outbox: asyncio.Queue[str | bytes | None]) -> None:
        while (text := await outbox.get()) is not None:
            try:
                if isinstance(text, bytes):
                    await ws.send_bytes(text)
                else:
                    await ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
                log.debug("websocket send failed: %s", exc)
                return

    def broadcast_status(self) -> None:
        """Tell everybody the queue changed; changes within one loop turn (a burst of POSTs,
        a prompt ending and the next starting) make one message, counted when it is sent."""
        if self._status_due:
            return
        self._status_due = True
        asyncio.get_running_loop().call_soon(self._send_status)

    def _send_status(self) -> None:
        self._status_due = False
        self.send("status", self._status())

    async def close_all(self) -> None:
        for conns in list(self._clients.values()):
            for ws in list(conns):
                await ws.close(code=1001, message=b"server shutdown")
