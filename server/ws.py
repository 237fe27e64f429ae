"""The websocket hub: `GET /ws?clientId=` connections, ComfyUI's `{"type", "data"}` messages.

Per-prompt messages go to the client that queued the prompt (its `client_id`); prompts queued
without one are announced to everybody, as ComfyUI does. All methods run on the event loop; the
worker thread reaches them through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("fluxloom.ws")

MAX_BACKLOG = 10_000  # unsent messages per connection before it is dropped


class Hub:
    def __init__(
        self, status: Callable[[], dict[str, Any]], features: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self._status = status  # builds the `status` payload (queue_remaining)
        self._features = features  # the server's feature flags, for ComfyUI's `feature_flags` handshake
        self._clients: dict[str, set[web.WebSocketResponse]] = {}
        # One outbox per connection, drained by one task, so messages keep their order.
        self._outbox: dict[web.WebSocketResponse, asyncio.Queue[str | None]] = {}
        self._status_due = False
        self.last_running: dict[str, Any] = {}  # client_id, node, prompt_id of the running prompt

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._clients.values())

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        outbox: asyncio.Queue[str | None] = asyncio.Queue()
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
                    self._answer_feature_flags(msg.data, outbox)
                first = False
        finally:
            outbox.put_nowait(None)
            self._outbox.pop(ws, None)
            await sender
            conns = self._clients.get(client_id)
            if conns is not None:
                conns.discard(ws)
                if not conns:
                    del self._clients[client_id]
        return ws

    def _answer_feature_flags(self, text: str, outbox: asyncio.Queue[str | None]) -> None:
        """ComfyUI's handshake: a client whose first message is `feature_flags` gets the
        server's flags back (the official frontend waits for them)."""
        if self._features is None:
            return
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            return
        if kind == "feature_flags":
            outbox.put_nowait(self._encode("feature_flags", self._features()))

    @staticmethod
    def _encode(event: str, data: dict[str, Any]) -> str:
        return json.dumps({"type": event, "data": data})

    def send(self, event: str, data: dict[str, Any], client_id: str | None = None) -> None:
        """Queue a message to one client (or everybody when `client_id` is None)."""
        if event == "executing":
            self.last_running = {"client_id": client_id, "node": data.get("node"), "data": data}
        text = self._encode(event, data)
        targets = (
            self._clients.get(client_id, set())
            if client_id is not None
            else {ws for conns in self._clients.values() for ws in conns}
        )
        for ws in list(targets):
            outbox = self._outbox.get(ws)
            if outbox is None:
                continue
            if outbox.qsize() >= MAX_BACKLOG:  # a client that stopped reading: let it go
                log.warning("websocket client %s is not reading; closing it", client_id)
                self._outbox.pop(ws, None)
                asyncio.ensure_future(ws.close(code=1008, message=b"not reading"))
                continue
            outbox.put_nowait(text)

    @staticmethod
    async def _drain(ws: web.WebSocketResponse, outbox: asyncio.Queue[str | None]) -> None:
        while (text := await outbox.get()) is not None:
            try:
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
