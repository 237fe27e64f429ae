"""Fault 1 of issue 13: websocket clients that stop reading must not grow the server's memory.
Each connection's outbox is bounded in bytes; a client past it is dropped with close code 1008
and a reason, its backlog freed at once, and it can reconnect."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

from server.routes.common import STATE, Limits
from server.ws import Hub
from tests.hardening.serve import Serve, closed_by_server, ws_handshake
from tests.server.conftest import Api, ServerThread, client_id, math_prompt
from tests.server.serve_process import shared_models
from tests.server.wsclient import WSClient, done

MiB = 2**20


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame (server frames are never masked)."""

    def take(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    b0, b1 = take(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", take(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", take(8))
    return b0 & 0x0F, take(n)


def broadcast(server: ServerThread, text: str, times: int) -> None:
    """`times` messages to every client, sent from the event loop as the worker's are."""

    async def send() -> None:
        for _ in range(times):
            server.app[STATE].hub.send("test", {"text": text})

    asyncio.run_coroutine_threadsafe(send(), server.loop).result(10)


def _stalled(server: ServerThread, cid: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws_handshake(server.port, cid, sock)
    return sock


def test_a_client_that_stops_reading_is_dropped_with_a_reason_and_can_reconnect(tmp_path):
    """Before: a client that never read kept up to 10,000 messages of any size queued on the
    server, whatever their bytes, and a connection that went away was never forgotten. Now its
    outbox holds at most `ws_outbox_bytes`; past that it is closed with 1008 and a reason, its
    backlog is freed at once, the socket is cut if it does not even take the close frame, and
    the hub forgets it."""
    limits = Limits(ws_outbox_bytes=256 * 1024, ws_close_grace=3.0)
    server = ServerThread(tmp_path / "data", limits=limits).start()
    try:
        hub = server.app[STATE].hub
        cid = client_id()
        reader, never = _stalled(server, cid), _stalled(server, client_id())
        deadline = time.monotonic() + 10
        while hub.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        broadcast(server, "y" * 64 * 1024, 200)  # 12.5 MiB to clients that read nothing
        assert hub.dropped == 2
        assert hub.queued_bytes == 0  # their backlogs went with them
        # One reads now (within the grace): what was already on its way, then the close frame.
        reader.settimeout(10)
        while True:
            opcode, payload = read_frame(reader)
            if opcode == 8:
                break
        code = struct.unpack("!H", payload[:2])[0]
        assert code == 1008 and b"too slow" in payload[2:], payload
        reader.close()
        # The other never reads nor closes: the server cuts it after the grace, and forgets both.
        deadline = time.monotonic() + 10
        while hub.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.connections == 0
        assert closed_by_server(never, 5)
        never.close()

        # The same client id comes back and gets its messages again.
        ws = server.ws(cid)
        assert ws.recv()["type"] == "status"
        pid = Api(server.url).queue(math_prompt(2), client_id=cid)
        types = [m["type"] for m in ws.until(done(pid))]
        assert "executed" in types
        ws.close()
    finally:
        server.stop()


def test_ten_stalled_clients_during_100_mib_of_broadcasts_keep_rss_bounded(tmp_path, tmp_path_factory):
    """The issue's measurement on a real `fluxloom serve`: ten clients connect to /ws and never
    read while the server broadcasts ~100 MiB of `executed` messages (a 512 KiB ShowValue text,
    200 times); before, the server's RSS grew by ~105 MB and stayed. Now it grows < 20 MB, every
    stalled client is cut off, and a dropped client can reconnect and get messages again."""
    srv = Serve(tmp_path, shared_models(tmp_path_factory), "--cache-budget", "64M")
    try:
        text = "z" * (512 * 1024)
        prompt = {
            "1": {"class_type": "Text", "inputs": {"text": text}},
            "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
        }
        for _ in range(4):  # warm up: imports, allocator, SQLite pages, the cached text
            srv.api.wait_job(srv.api.queue(prompt))
        base = srv.rss()
        ids = [client_id() for _ in range(10)]
        socks = []
        for cid in ids:
            sock = srv.connect(rcvbuf=4096)
            ws_handshake(srv.port, cid, sock)
            socks.append(sock)

        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], srv.rss())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            last = None
            for _ in range(200):  # no client_id: every message goes to every client
                last = srv.api.queue(prompt)
            assert srv.api.wait_job(last, timeout=120)["status"] == "success"
        finally:
            stop.set()
            sampler.join()
        growth = peak[0] - base
        assert growth < 20 * MiB, f"RSS grew {growth / MiB:.1f} MiB with 10 stalled clients"
        for sock in socks:
            assert closed_by_server(sock, 15)
            sock.close()

        ws = WSClient(f"ws://127.0.0.1:{srv.port}/ws?clientId={ids[0]}")
        assert ws.recv()["type"] == "status"
        pid = srv.api.queue(math_prompt(3), client_id=ids[0])
        assert any(m["type"] == "executed" for m in ws.until(done(pid)))
        ws.close()
        assert "fell behind" in srv.log()
    finally:
        srv.stop()


def test_a_message_nobody_listens_to_is_not_even_encoded(monkeypatch):
    """A prompt queued by a script without a websocket (or a 100,000-node graph's `executed`
    messages) must not cost a json.dumps per message on the event loop."""
    hub = Hub(status=lambda: {})
    encoded: list[str] = []
    monkeypatch.setattr(Hub, "_encode", staticmethod(lambda event, data: encoded.append(event) or "{}"))
    for _ in range(1000):
        hub.send("executed", {"node": "1", "output": {"text": ["x" * 1000]}}, "nobody")
        hub.send("progress", {"value": 1, "max": 2})
    hub.send("executing", {"node": "7", "prompt_id": "p"}, "nobody")
    assert encoded == []
    assert hub.last_running["node"] == "7"  # still remembered for a client that reconnects
