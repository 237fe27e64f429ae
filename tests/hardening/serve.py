"""Helpers of the hardening tests: a `fluxloom serve` subprocess started with options, its RSS,
and raw sockets that do what hostile or broken clients do."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.server.conftest import Api
from tests.server.serve_process import REPO, free_port


class Serve:
    """`fluxloom serve ARGS` on 127.0.0.1 with the utility and test nodes; answering when built."""

    def __init__(self, tmp: Path, models: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = tmp / "serve.log"
        self._log = self.log_path.open("ab")
        env = {**os.environ, "FLUXLOOM_EXTRA_NODES": "tests.server.server_nodes"}
        cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(tmp / "data"), "--models", str(models), *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.api = Api(f"http://127.0.0.1:{self.port}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.log()[-3000:]}"
            try:
                if self.api.get("/prompt").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        """Resident memory of the server process, in bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket()
        if rcvbuf is not None:  # before connect, so the window stays small
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect(("127.0.0.1", self.port))
        return s

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def ws_handshake(port: int, client_id: str, sock: socket.socket) -> None:
    """Send a websocket upgrade for /ws?clientId=… and read the answer's head only."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: leave every frame after the head unread
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Read (and drop) what the server sent until it closes the connection."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(1 << 20):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False
