"""ComfyUI's `/internal` routes, which only its frontend uses: the server's recent log lines for
the Console panel (with a live `logs` stream on the websocket for subscribed clients), the model
folder paths, and the file names of the input/output/temp folders."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from server.frontend import FRONTEND, frontend_state
from server.routes.common import STATE, BadRequest, read_object, state
from server.routes.frontend_info import MODEL_FOLDERS

LOG_CAPACITY = 300  # lines kept, as ComfyUI keeps


class LogBuffer(logging.Handler):
    """The process's recent log records as ComfyUI's log entries `{t, m}`; listeners (one per
    running app) hear each new entry, from whichever thread logged it."""

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        super().__init__(logging.INFO)
        self.entries: deque[dict[str, str]] = deque(maxlen=capacity)
        self.listeners: list[Callable[[list[dict[str, str]]], None]] = []
        self._lock = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {
                "t": dt.datetime.fromtimestamp(record.created).isoformat(),
                "m": self.format(record) + "\n",
            }
        except Exception:  # a bad log call must not break the caller
            self.handleError(record)
            return
        with self._lock:
            self.entries.append(entry)
            listeners = list(self.listeners)
        for listener in listeners:
            listener([entry])

    def snapshot(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.entries)


LOGS = LogBuffer()


def install_log_buffer() -> LogBuffer:
    """Attach the buffer to the root logger (once per process)."""
    root = logging.getLogger()
    if LOGS not in root.handlers:
        root.addHandler(LOGS)
    return LOGS


def terminal_size() -> dict[str, int]:
    cols, rows = shutil.get_terminal_size((120, 40))
    return {"cols": cols, "rows": rows}


async def get_logs(request: web.Request) -> web.Response:
    return web.json_response("".join(f"{e['t']} - {e['m']}" for e in LOGS.snapshot()))


async def get_raw_logs(request: web.Request) -> web.Response:
    return web.json_response({"entries": LOGS.snapshot(), "size": terminal_size()})


async def subscribe_logs(request: web.Request) -> web.Response:
    """`{clientId, enabled}`: that websocket client gets (or stops getting) `logs` messages."""
    body = await read_object(request)
    client_id = body.get("clientId")
    if not isinstance(client_id, str) or not client_id:
        raise BadRequest("invalid_request", "clientId (the websocket's client id) is required")
    subscribers = frontend_state(request).log_subscribers
    if body.get("enabled"):
        subscribers.add(client_id)
    else:
        subscribers.discard(client_id)
    return web.json_response({"subscribed": client_id in subscribers})


async def get_folder_paths(request: web.Request) -> web.Response:
    models = Path(state(request).runtime.env.models_dir)
    return web.json_response({name: [str((models / name).resolve())] for name in MODEL_FOLDERS})


async def get_files(request: web.Request) -> web.Response:
    """File names of the input, output or temp folder, newest first."""
    kind = request.match_info["directory_type"]
    folder = state(request).folder(kind)
    if folder is None:
        return web.json_response({"error": "Invalid directory type"}, status=400)
    files = [p for p in Path(folder).iterdir() if p.is_file()] if Path(folder).is_dir() else []
    files.sort(key=lambda p: -p.stat().st_mtime)
    return web.json_response([p.name for p in files])


def stream_logs_to_subscribers(app: web.Application, call_on_loop: Callable[..., None]) -> Callable[[], None]:
    """Send each new log entry to the app's subscribed websocket clients (through the event
    loop: records come from any thread); returns the function that stops it (app cleanup)."""
    hub, subscribers = app[STATE].hub, app[FRONTEND].log_subscribers

    def send(entries: list[dict[str, Any]]) -> None:
        for client_id in list(subscribers):
            hub.send("logs", {"entries": entries, "size": terminal_size()}, client_id)

    def listener(entries: list[dict[str, str]]) -> None:
        if subscribers:
            call_on_loop(send, entries)

    install_log_buffer().listeners.append(listener)
    return lambda: LOGS.listeners.remove(listener)
