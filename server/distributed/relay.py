"""Events from workers to the front end a prompt came from, and requests from front ends to
workers.

Why Redis Streams and not pub/sub: a pub/sub message sent while its reader is reconnecting (a
Redis restart, a network blip) is lost for good, and ComfyUI clients wait for the final
`executing {node: null}` of their prompt forever when it is lost. A stream keeps the messages
(bounded: `MAXLEN ~ 10000` per front end, expiring an hour after the last one), a reader resumes
after the last id it saw, and one stream per front end keeps each prompt's events in the order
the worker sent them. The final events are added by the same atomic step that stores the
result (redis_queue.finish), so they are never sent for a result that was not stored, nor twice.

Streams:
- `events:<front end>`: `{c: client_id, e: event, d: JSON data}`, written by workers. A live
  preview is an event whose data is the frame's metadata; its JPEG waits beside it under
  `preview:<prompt>:<node>` (the newest one only, expiring within a minute), so that previews
  keep their place among the events without filling the stream with images.
- `bus`: "the queue changed" (queued, claimed, finished, deleted), read by every front end to
  send the websocket `status` message.
- `control`: `{to: worker | "*", action: interrupt | free, ...}`, read by every worker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from server.distributed.config import EVENTS_TTL_S, connection_errors, text
from server.distributed.redis_queue import RedisQueue
from server.previews import PREVIEW_EVENT

log = logging.getLogger("fluxloom.distributed")

FINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")
PREVIEW_TTL_MS = 60_000


def preview_writer(q: RedisQueue, origin: str, client_id: str | None, metadata: dict, jpeg: bytes):
    """A live preview as an `EventPublisher.call` write: the JPEG under its node's key, then the
    event that announces it."""
    key = q.keys.preview(metadata["prompt_id"], metadata["node_id"])

    def write(pipe: Any) -> None:
        pipe.set(key, jpeg, px=PREVIEW_TTL_MS)
        q.add_event(pipe, origin, client_id, PREVIEW_EVENT, metadata)

    return write


class EventPublisher:
    """Worker side: events leave in order from one thread, batched in one pipeline (MULTI/EXEC,
    so a retry after a lost connection never sends half a batch twice), so the executor never
    waits for Redis between two progress steps. `call(fn)` adds other writes that need not hold
    the executor up (`fn(pipeline)`: the worker's advertisement, the running node), in order
    with the events. At the end of a prompt, `take_rest()` hands what is still unsent to the
    worker, which writes it in the same round trip as the result."""

    def __init__(self, q: RedisQueue) -> None:
        self.q = q
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._sending = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fluxloom-events", daemon=True)
        self._thread.start()

    def send(self, origin: str, client_id: str | None, event: str, data: dict[str, Any]) -> None:
        self._put((origin, client_id, event, data))

    def call(self, fn: Callable[[Any], Any]) -> None:
        self._put(fn)

    def _put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def take_rest(self) -> list[Any]:
        """Everything not sent yet (after the batch being sent, if any, is in Redis)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._sending)
            rest = list(self._items)
            self._items.clear()
            return rest

    def flush(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._items and not self._sending, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closed)
                if not self._items:
                    return
                batch = list(self._items)
                self._items.clear()
                self._sending = True
            try:
                self._send(batch)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _send(self, batch: list[Any]) -> None:
        errors = connection_errors()
        delay = 0.05
        while True:
            try:
                pipe = self.q.redis.pipeline(transaction=True)
                write_items(self.q, pipe, batch)
                pipe.execute()
                return
            except errors as exc:
                log.warning("events not sent yet (Redis unreachable: %s); retrying", exc)
                threading.Event().wait(delay)
                delay = min(delay * 2, 1.0)
            except Exception:  # an event that cannot be encoded: never block the others
                log.exception("events could not be sent")
                return


def write_items(q: RedisQueue, pipe: Any, items: list[Any]) -> None:
    """Queue a publisher's items (events and `fn(pipeline)` writes) on a pipeline, in order."""
    streams = set()
    for item in items:
        if callable(item):
            item(pipe)
        else:
            origin, client_id, event, data = item
            streams.add(q.keys.events(origin))
            q.add_event(pipe, origin, client_id, event, data)
    for key in streams:
        pipe.expire(key, EVENTS_TTL_S)


class StreamReader:
    """Reads streams from their newest entry on, in a thread, calling `handle(stream, fields)`
    for each new entry; resumes where it was after a lost connection."""

    def __init__(
        self,
        q: RedisQueue,
        streams: list[str],
        handle: Callable[[str, dict[str, str]], None],
        name: str,
        block: float = 1.0,
    ) -> None:
        self.q, self.streams, self.handle, self.block = q, streams, handle, block
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._last: dict[str, str] = {}

    def start(self) -> None:
        for s in self.streams:
            try:
                self._last[s] = self.q.last_id(s)
            except connection_errors():
                self._last[s] = "$"
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.block + 5)

    def _loop(self) -> None:
        errors = connection_errors()
        while not self._stop.is_set():
            try:
                got = self.q.redis.xread(self._last, block=int(self.block * 1000), count=500)
            except errors as exc:
                log.debug("stream read failed (%s); retrying", exc)
                self._stop.wait(0.2)
                continue
            for stream, entries in got or []:
                stream = text(stream)
                for msg_id, fields in entries:
                    self._last[stream] = text(msg_id)
                    try:
                        self.handle(stream, {text(k): text(v) for k, v in fields.items()})
                    except Exception:
                        log.exception("handling a message of %s failed", stream)


class EventRelay:
    """Front end side: this front end's events go to its websocket clients (after the files
    of an `executed` event are in its output folder); a change of the queue sends `status`."""

    def __init__(
        self,
        q: RedisQueue,
        frontend: str,
        deliver: Callable[[str, dict[str, Any], str | None], None],
        queue_changed: Callable[[], None],
        fetch_outputs: Callable[[dict[str, Any]], None],
        wants_previews: Callable[[str | None], bool] = lambda client_id: True,
    ) -> None:
        self.deliver, self.queue_changed, self.fetch_outputs = deliver, queue_changed, fetch_outputs
        self.q, self.wants_previews = q, wants_previews
        self.events_key = q.keys.events(frontend)
        self.progress: dict[str, dict[str, Any]] = {}  # prompt_id -> node, value, max (for /jobs)
        self.reader = StreamReader(q, [self.events_key, q.keys.bus], self._handle, "fluxloom-relay")

    def start(self) -> None:
        self.reader.start()

    def stop(self) -> None:
        self.reader.stop()

    def _handle(self, stream: str, fields: dict[str, str]) -> None:
        if stream != self.events_key:
            self.queue_changed()
            return
        event, data = fields["e"], json.loads(fields["d"])
        if event == PREVIEW_EVENT:
            self._preview(data, fields.get("c") or None)
            return
        self._track(event, data)
        if event == "executed" and isinstance(data.get("output"), dict):
            try:
                self.fetch_outputs(data["output"])
            except Exception:
                log.exception("output files of prompt %s could not be written", data.get("prompt_id"))
        self.deliver(event, data, fields.get("c") or None)

    def _preview(self, metadata: dict[str, Any], client_id: str | None) -> None:
        """A live preview, when somebody here watches that prompt and the image is still there."""
        if not self.wants_previews(client_id):
            return
        jpeg = self.q.redis.get(self.q.keys.preview(metadata["prompt_id"], metadata["node_id"]))
        if jpeg:
            self.deliver(PREVIEW_EVENT, {"metadata": metadata, "image": bytes(jpeg)}, client_id)

    def _track(self, event: str, data: dict[str, Any]) -> None:
        pid = data.get("prompt_id")
        if event == "execution_start":
            self.progress[pid] = {"node": None, "value": 0, "max": 0}
        elif event == "executing" and data.get("node") is not None:
            self.progress[pid] = {"node": data["node"], "value": 0, "max": 0}
        elif event == "progress" and pid in self.progress:
            self.progress[pid].update(value=data.get("value", 0), max=data.get("max", 0))
        elif event in FINAL_EVENTS or (event == "executing" and data.get("node") is None):
            self.progress.pop(pid, None)


class ControlListener:
    """Worker side: interrupt / free requests addressed to this worker (or to all)."""

    def __init__(self, q: RedisQueue, worker: str, on_request: Callable[[dict[str, str]], None]) -> None:
        self.worker, self.on_request = worker, on_request
        self.reader = StreamReader(q, [q.keys.control], self._handle, "fluxloom-control")

    def start(self) -> None:
        self.reader.start()

    def stop(self) -> None:
        self.reader.stop()

    def _handle(self, stream: str, fields: dict[str, str]) -> None:
        if fields.get("to") in ("*", self.worker):
            self.on_request(fields)
