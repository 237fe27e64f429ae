"""A tiny stdlib websocket client (RFC 6455, text frames), the kind a plain script would use to
follow ComfyUI's `/ws` messages; it also lets tests send arbitrary handshake headers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeRefused(Exception):
    def __init__(self, status: int, head: str) -> None:
        super().__init__(f"websocket handshake refused: {status}")
        self.status, self.head = status, head


class ConnectionClosed(Exception):
    pass


class WSClient:
    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        text = head.decode("latin-1")
        status = int(text.split()[1])
        if status != 101:
            self.sock.close()
            raise HandshakeRefused(status, text)
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        fields = dict(line.split(":", 1) for line in text.split("\r\n")[1:] if ":" in line)
        got = {k.strip().lower(): v.strip() for k, v in fields.items()}.get("sec-websocket-accept")
        assert got == accept, f"bad Sec-WebSocket-Accept {got!r}"

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("server closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # clients must mask every frame
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def next_data(self, timeout: float) -> tuple[int, bytes]:
        """The next whole data message: (1, its text) or (2, its bytes), answering pings;
        TimeoutError when none arrives in time."""
        self.sock.settimeout(timeout)
        message, kind = b"", None
        while True:
            try:
                b0, b1 = self._take(2)
            except TimeoutError:
                raise TimeoutError("no websocket message in time") from None
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            payload = self._take(n)
            if opcode == 8:
                raise ConnectionClosed("server sent close")
            if opcode == 9:
                self._send(10, payload)
                continue
            if opcode in (0, 1, 2):
                kind = kind if opcode == 0 else opcode
                message += payload
                if fin:
                    return kind, message

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next JSON text message (binary ones are skipped); TimeoutError when none arrives
        in time."""
        while True:
            kind, message = self.next_data(timeout)
            if kind == 1:
                return json.loads(message)

    def until(self, predicate, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Messages up to and including the first that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; got {[m['type'] for m in seen]}")
            msg = self.recv(left)
            seen.append(msg)
            if predicate(msg):
                return seen

    def close(self) -> None:
        try:
            self._send(8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def done(prompt_id: str):
    """Predicate: the prompt finished (ComfyUI's `executing` with node null)."""
    return lambda m: (
        m["type"] == "executing" and m["data"]["node"] is None and m["data"]["prompt_id"] == prompt_id
    )
