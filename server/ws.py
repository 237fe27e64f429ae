"""The websocket hub: `GET /ws?clientId=` connections, ComfyUI's `{"type", "data"}` messages.

Per-prompt messages go to the client that queued the prompt (its `client_id`); prompts queued
without one are announced to everybody, as ComfyUI does. All methods run on the event loop; the
worker thread reaches them through `loop.call_soon_threadsafe`. Live previews leave as ComfyUI's
binary frames (server/previews.py): with their node's id to clients that said
`supports_preview_metadata` in their `feature_flags`, the older frame without it to the others.

Each connection has an outbox bounded in bytes (`Limits.ws_outbox_bytes`): a client that reads
slower than the server sends is dropped (close code 1008, with the reason) instead of holding
the server's memory, and may reconnect. A broadcast message is encoded once and shared by every
outbox that holds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from server import events
from server.previews import PREVIEW_EVENT
from server.security import json_error

log = logging.getLogger("fluxloom.ws")

DEFAULT_OUTBOX_BYTES = 4 * 2**20
DEFAULT_CLOSE_GRACE = 5.0  # seconds a dropped client has to take its close frame before the cut
PREVIEW_BACKLOG_BYTES = 256 * 2**10  # a client with more unsent misses previews (soon stale anyway)


class Outbox:
    """One connection's unsent messages and their size; one task sends them in order."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, client_id: str, limit: int) -> None:
        self.ws, self.request, self.client_id, self.limit = ws, request, client_id, limit
        self.messages: deque[str | bytes] = deque()  # text messages, binary preview frames
        self.bytes = 0  # queued, plus the message being written
        self.dropped = False
        self.preview_metadata = False  # the client reads type 4 preview frames
        self._ready = asyncio.Event()

    def put(self, text: str | bytes) -> bool:
        """Queue a message; False when that would take the outbox past its limit. One message
        larger than the limit still goes to a client that has nothing waiting."""
        if self.bytes and self.bytes + len(text) > self.limit:
            return False
        self.messages.append(text)
        self.bytes += len(text)  # json.dumps writes ASCII: characters are bytes
        self._ready.set()
        return True

    def discard(self) -> None:
        """Forget what is waiting (the memory goes now) and stop the sender."""
        self.dropped = True
        self.messages.clear()
        self.bytes = 0
        self._ready.set()

    async def send_all(self) -> None:
        while not self.dropped:
            if not self.messages:
                self._ready.clear()
                await self._ready.wait()
                continue
            text = self.messages.popleft()
            try:
                if isinstance(text, bytes):
                    await self.ws.send_bytes(text)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
                log.debug("websocket send failed: %s", exc)
                return
            finally:
                self.bytes = max(0, self.bytes - len(text))


class Hub:
    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        features: Callable[[], dict[str, Any]] | None = None,
        outbox_bytes: int = DEFAULT_OUTBOX_BYTES,
        close_grace: float = DEFAULT_CLOSE_GRACE,
    ) -> None:
        self._status = status  # builds the `status` payload (queue_remaining)
        self._features = features  # the server's feature flags, for ComfyUI's `feature_flags` handshake
        self.outbox_bytes = outbox_bytes
        self.close_grace = close_grace
        self._closing: set[asyncio.Future] = set()
        self._clients: dict[str, set[web.WebSocketResponse]] = {}
        self._outbox: dict[web.WebSocketResponse, Outbox] = {}
        self._status_due = False
        self.dropped = 0  # connections dropped for falling behind, since start
        self.last_running: dict[str, Any] = {}  # client_id, node, prompt_id of the running prompt

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._clients.values())

    @property
    def queued_bytes(self) -> int:
        return sum(box.bytes for box in self._outbox.values())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            upgrade = request.headers.get("Upgrade", "")
            return json_error(
                400,
                "not_websocket",
                "GET /ws is a websocket: send Upgrade: websocket, Connection: Upgrade, "
                f"Sec-WebSocket-Key and Sec-WebSocket-Version: 13 (Upgrade was {upgrade!r})",
            )
        _require_masked_frames(request)
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        box = Outbox(ws, request, client_id, self.outbox_bytes)
        self._outbox[ws] = box
        box.put(self._encode("status", {**self._status(), "sid": client_id}))
        # A client that reconnects while its prompt runs learns which node is executing.
        running = self.last_running
        if running.get("client_id") == client_id and running.get("node") is not None:
            box.put(self._encode("executing", running["data"]))
        self._clients.setdefault(client_id, set()).add(ws)
        sender = asyncio.ensure_future(box.send_all())
        try:
            first = True
            async for msg in ws:  # clients may send; nothing they send changes state
                if msg.type == WSMsgType.ERROR:
                    break
                if first and msg.type == WSMsgType.TEXT:
                    self._answer_feature_flags(msg.data, box)
                first = False
        finally:
            # First forget the connection (this block may be cancelled at its first await when
            # the peer is gone), then stop its sender, which may wait on a socket nobody reads.
            box.discard()
            self._outbox.pop(ws, None)
            conns = self._clients.get(client_id)
            if conns is not None:
                conns.discard(ws)
                if not conns:
                    del self._clients[client_id]
            sender.cancel()
        return ws

    def _answer_feature_flags(self, text: str, box: Outbox) -> None:
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
        box.preview_metadata = isinstance(flags, dict) and flags.get("supports_preview_metadata") is True
        if self._features is not None and not box.dropped:
            box.put(self._encode("feature_flags", self._features()))

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
        targets = (
            self._clients.get(client_id, set())
            if client_id is not None
            else {ws for conns in self._clients.values() for ws in conns}
        )
        if not targets:  # nobody listens (a script's prompt, 100,000 `executed` of a huge graph)
            return
        text = self._encode(event, data)
        for ws in list(targets):
            box = self._outbox.get(ws)
            if box is not None and not box.dropped and not box.put(text):
                self._drop(box)

    def wants_previews(self, client_id: str | None) -> bool:
        """Whether a preview of this client's prompt would reach anybody (called from the
        worker thread: reads that are atomic under the GIL only)."""
        return bool(self._clients.get(client_id) if client_id is not None else self._clients)

    def _send_preview(self, metadata: dict[str, Any], jpeg: bytes, client_id: str | None) -> None:
        """A preview frame to a prompt's clients; one that is behind misses it (never dropped
        for a preview)."""
        targets = (
            self._clients.get(client_id, ())
            if client_id is not None
            else [ws for conns in self._clients.values() for ws in conns]
        )
        frames: dict[bool, bytes] = {}
        for ws in list(targets):
            box = self._outbox.get(ws)
            if box is None or box.dropped or box.bytes > PREVIEW_BACKLOG_BYTES:
                continue
            typed = box.preview_metadata
            if typed not in frames:
                frames[typed] = events.preview_frame(jpeg, metadata if typed else None)
            box.put(frames[typed])

    def _drop(self, box: Outbox) -> None:
        """A client that stopped reading (or reads too slowly): free its backlog now, tell it
        why, and cut the socket if it does not take even the close frame."""
        waiting = box.bytes
        box.discard()
        self._outbox.pop(box.ws, None)
        self.dropped += 1
        log.warning(
            "websocket client %s fell behind (%d bytes unsent, limit %d); dropped",
            box.client_id,
            waiting,
            box.limit,
        )
        reason = f"too slow: over {box.limit} bytes unsent; reconnect".encode()
        task = asyncio.ensure_future(
            _close(box, WSCloseCode.POLICY_VIOLATION, reason[:123], self.close_grace)
        )
        self._closing.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._closing.discard)

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
        boxes = list(self._outbox.values())
        await asyncio.gather(
            *(_close(box, WSCloseCode.GOING_AWAY, b"server shutdown", self.close_grace) for box in boxes)
        )


async def _close(box: Outbox, code: int, reason: bytes, grace: float) -> None:
    try:
        async with asyncio.timeout(grace):
            await box.ws.close(code=code, message=reason)
    except TimeoutError:
        pass
    # A client that takes nothing would keep its unsent bytes (and the socket) forever.
    transport = box.request.transport
    if transport is not None and transport.get_write_buffer_size():
        transport.abort()


def _require_masked_frames(request: web.Request) -> None:
    """RFC 6455 §5.1: a server must close the connection on an unmasked client frame; aiohttp
    accepts them. Put a frame-header reader between the socket and aiohttp for this one
    connection (installed before the handshake answer, so it sees every frame)."""
    transport = request.transport
    if transport is not None:
        transport.set_protocol(MaskedFramesOnly(request.protocol, transport))


class MaskedFramesOnly(asyncio.Protocol):
    """Passes every byte to aiohttp's protocol while following frame boundaries (header, then
    payload length bytes to skip); fails the connection with close code 1002 at the first frame
    header whose mask bit is clear."""

    def __init__(self, inner: asyncio.BaseProtocol, transport: asyncio.BaseTransport) -> None:
        self._inner = inner
        self._transport = transport
        self._head = bytearray()  # the frame header read so far
        self._skip = 0  # payload bytes of the current frame still to pass
        self._failed = False

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return
        if not self._frames_masked(data):
            self._failed = True
            reason = b"client frames must be masked (RFC 6455 5.1)"
            self._transport.write(b"\x88" + bytes([2 + len(reason)]) + struct.pack("!H", 1002) + reason)
            self._transport.close()
            return
        self._inner.data_received(data)

    def _frames_masked(self, data: bytes) -> bool:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            self._head.append(data[i])
            i += 1
            if len(self._head) < 2:
                continue
            if not self._head[1] & 0x80:
                return False
            size7 = self._head[1] & 0x7F
            extra = 2 if size7 == 126 else 8 if size7 == 127 else 0
            if len(self._head) < 2 + extra + 4:
                continue
            size = int.from_bytes(self._head[2 : 2 + extra], "big") if extra else size7
            self._head.clear()
            self._skip = size
        return True

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
