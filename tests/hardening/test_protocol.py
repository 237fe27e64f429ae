"""Faults 2 and 9 of issue 13, against a real `fluxloom serve --header-timeout 1 --body-timeout 1`
over raw sockets: slowloris headers and slow bodies are cut off in time, an unmasked client
websocket frame closes the connection with 1002, and a NUL byte in a header is one log line."""

from __future__ import annotations

import select
import socket
import struct
import time

import pytest

from tests.hardening.serve import Serve, ws_handshake
from tests.hardening.test_ws_slow_clients import read_frame
from tests.server.serve_process import shared_models


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = Serve(
        tmp_path_factory.mktemp("protocol"),
        shared_models(tmp_path_factory),
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
    )
    yield server
    server.stop()


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed its side (EOF or reset); never blocks."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionError:
        return True


def test_slowloris_headers_are_closed_within_the_header_timeout(srv):
    """Before: 50 connections sending their headers one byte at a time were all still open
    after 30 s (aiohttp waited 75 s, or an hour without run_app). Now each is closed once the
    header timeout (1 s here) passes, while the server goes on answering others."""
    head = b"GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64
    socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(50)]
    started = time.monotonic()
    closed_at: dict[int, float] = {}
    sent = 0
    while len(closed_at) < len(socks) and time.monotonic() - started < 6:
        for i, s in enumerate(socks):
            if i in closed_at:
                continue
            if _closed(s):
                closed_at[i] = time.monotonic() - started
                continue
            try:
                s.send(head[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_at[i] = time.monotonic() - started
        sent += 1
        time.sleep(0.2)  # a byte every 0.2 s: never a whole head before the timeout
    assert srv.api.get("/prompt").status == 200
    for s in socks:
        s.close()
    assert len(closed_at) == 50, f"{50 - len(closed_at)} slow connections still open after 6 s"
    assert max(closed_at.values()) < 3.0, sorted(closed_at.values())[-5:]


def test_slow_body_gets_408_and_the_connection_closes(srv):
    """Before: a body sent a byte at a time held its handler (and connection) forever. Now,
    after the body timeout, a body under the minimum rate is answered 408 and cut off."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(
        b"POST /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"prompt": '
    )
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 6 and b"\r\n\r\n" not in answer:
        if select.select([s], [], [], 0.2)[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        else:
            s.send(b" ")
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.9 < elapsed < 3.0, elapsed
    s.settimeout(5)
    while chunk := s.recv(65536):  # the JSON error, then the server closes
        answer += chunk
    assert b'"request_timeout"' in answer and b"Connection: close" in answer
    s.close()


def test_a_fast_request_on_a_slow_link_still_works(srv):
    """The timeouts are about stalling, not about ordinary clients: a whole request inside the
    header timeout, and a body that keeps coming, are answered normally."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    body = b'{"clear": false}'
    s.sendall(b"POST /queue HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body))
    time.sleep(0.3)
    s.sendall(body)
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.close()


def test_unmasked_client_frame_closes_with_1002(srv):
    """RFC 6455 §5.1: a client frame without a mask makes the server close the connection
    (1002, protocol error). Before, aiohttp took it as a normal message."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    ws_handshake(srv.port, "unmasked", s)
    s.settimeout(5)
    opcode, _ = read_frame(s)
    assert opcode == 1  # the `status` message on connect
    s.sendall(b"\x81\x05hello")  # FIN + text, no mask bit
    opcode, payload = read_frame(s)
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1002, payload
    assert s.recv(65536) == b""  # and the socket is closed
    s.close()

    # A masked frame is fine, split at any byte.
    s = socket.create_connection(("127.0.0.1", srv.port))
    ws_handshake(srv.port, "masked", s)
    s.settimeout(5)
    read_frame(s)
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * 300))
    frame = b"\x81\xfe" + struct.pack("!H", 300) + mask + payload
    for i in range(0, len(frame), 7):
        s.sendall(frame[i : i + 7])
        time.sleep(0.001)
    s.sendall(b"\x89\x80" + mask)  # a masked ping: the server answers with a pong
    opcode, _ = read_frame(s)
    assert opcode == 10
    s.close()


def test_nul_byte_in_a_header_logs_one_line_per_request(srv):
    """Before: aiohttp logged a full traceback for each such request. Now: one line each, and
    the client still gets its 400."""
    before = srv.log()
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        s.close()
    deadline = time.monotonic() + 5
    while srv.log().count("bad request from") - before.count("bad request from") < 3:
        assert time.monotonic() < deadline, srv.log()[len(before) :]
        time.sleep(0.05)
    added = srv.log()[len(before) :]
    assert "Traceback" not in added, added
    assert len([line for line in added.splitlines() if line.strip()]) == 3, added
