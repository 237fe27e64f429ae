"""The worker thread's events, handed to the event loop in order and in batches."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any

log = logging.getLogger("fluxloom.server")


class LoopBridge:
    """Hands calls from the worker thread to the event loop (once the app has started).

    Calls are queued and drained in order by one callback at a time, a few milliseconds' worth
    per loop turn: a prompt of 100,000 cached outputs sends 100,000 `executed` events, and one
    loop callback each (as `call_soon_threadsafe` per event would make) would keep every HTTP
    request waiting behind them."""

    BUDGET_S = 0.005  # the most time one drain takes before it lets the loop serve others

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._calls: collections.deque = collections.deque()
        self._scheduled = False
        self._lock = threading.Lock()

    def call(self, fn: Any, *args: Any) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        self._calls.append((fn, args))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _drain(self) -> None:
        deadline = time.perf_counter() + self.BUDGET_S
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:  # one failing delivery must not drop the ones after it
                log.exception("delivering %s failed", getattr(fn, "__name__", fn))
            if time.perf_counter() > deadline and calls:
                assert self.loop is not None
                self.loop.call_soon(self._drain)  # the rest after the loop's other work
                return
        with self._lock:
            self._scheduled = False
        if calls:  # something arrived between the last pop and the flag: drain it too
            with self._lock:
                if self._scheduled:
                    return
                self._scheduled = True
            self._drain()
