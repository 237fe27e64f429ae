"""Model manager — the low-VRAM core.

Loader nodes output handles: cheap, hashable names of one model, with no weights (FLUX's are
`nodes.flux.handles.ModelHandle`). A consumer node asks the manager to `use(handle)`; only then
are weights read (once: loaded models are kept by handle, so re-runs do not reload). The manager
keeps the models on the device within a device budget (VRAM, or RAM on a CPU-only machine) and
offloaded models within a host-RAM budget. When a model must come onto the device and the budget
would overflow, the least-recently-used models that are not in use leave it: offloaded to host
RAM while the RAM budget allows, released otherwise. So the peak is about the larger phase of a
workflow, not the sum of every model it touches.

The manager is generic: a node package hands it a `nodes.base.ModelProvider` at start-up (how to
load and size its handles; FLUX's is nodes.flux.provider), and nodes reach it through the
`nodes.base.ModelService` protocol as `ctx.models`.

On a CPU-only machine the "device" is the CPU: the same accounting applies, and offloading moves
a model from the device budget's books to the RAM budget's without copying it (it stays in RAM;
only releasing frees memory there).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from nodes.base import LoadedModel, ModelHandleLike, ModelProvider

log = logging.getLogger("fluxloom.models")

MAX_EVENTS = 1000  # the manager's log keeps the latest events only: a server runs for weeks


@dataclass(frozen=True)
class ModelEvent:
    """One entry of the manager's log: what happened to which model, and the device after."""

    action: str  # "load" | "to_device" | "offload" | "release"
    name: str
    kind: str
    bytes: int
    device_bytes: int  # on the device after the event
    host_bytes: int  # offloaded to host RAM after the event
    on_device: tuple[str, ...]  # kinds on the device after the event
    reason: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Entry:
    handle: ModelHandleLike
    loaded: LoadedModel | None = None
    bytes: int = 0
    location: str = "none"  # "device" | "cpu" | "none" (not loaded yet)
    in_use: int = 0
    last_used: int = 0
    release_pending: bool = False


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as they really are stored: quantized tensors
    by their inner data (torchao), bitsandbytes weights with their scales."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += tensor_bytes(t)
    return total


def tensor_bytes(t: torch.Tensor) -> int:
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        try:
            names, _ = t.__tensor_flatten__()
            return sum(tensor_bytes(getattr(t, n)) for n in names)
        except Exception:
            pass
    total = t.numel() * t.element_size()
    for extra in ("SCB",):  # bitsandbytes int8 row scales
        s = getattr(t, extra, None)
        if isinstance(s, torch.Tensor):
            total += s.numel() * s.element_size()
    state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit block scales
    absmax = getattr(state, "absmax", None)
    if isinstance(absmax, torch.Tensor):
        total += absmax.numel() * absmax.element_size()
    return total


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def automatic_budgets(device: torch.device) -> tuple[int, int]:
    """(device budget, host-RAM budget) when the user gave none: on CUDA, 90% of the free
    device memory (the rest is for activations); host RAM: half of the available RAM. On the CPU
    both live in the same RAM: the device gets half of what is available, offloads a quarter."""
    ram = available_ram()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9), ram // 2
    return ram // 2, ram // 4


def _trim_memory() -> None:
    """Give freed memory back to the OS so that a released model leaves the process's RSS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _describe(handle: ModelHandleLike) -> dict[str, Any]:
    describe = getattr(handle, "describe", None)  # optional: what else a provider's handles say
    return describe() if callable(describe) else {}


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class ModelManager:
    def __init__(
        self,
        provider: ModelProvider,
        *,
        device: torch.device | str | None = None,
        vram_budget: int | None = None,
        ram_budget: int | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        auto_vram, auto_ram = automatic_budgets(self.device)
        self.vram_budget = int(vram_budget) if vram_budget is not None else auto_vram
        self.ram_budget = int(ram_budget) if ram_budget is not None else auto_ram
        self._provider = provider
        self._entries: dict[ModelHandleLike, _Entry] = {}
        self._lock = threading.RLock()
        self._tick = 0
        self.events: list[ModelEvent] = []
        self.peak_device_bytes = 0
        self.peak_on_device: tuple[str, ...] = ()
        log.info(
            "model manager on %s: device budget %s, host RAM budget %s",
            self.device,
            _mib(self.vram_budget),
            _mib(self.ram_budget),
        )

    # --- accounting ---------------------------------------------------------------------------

    def _bytes_at(self, location: str) -> int:
        return sum(e.bytes for e in self._entries.values() if e.location == location)

    @property
    def device_bytes(self) -> int:
        with self._lock:
            return self._bytes_at("device")

    @property
    def host_bytes(self) -> int:
        with self._lock:
            return self._bytes_at("cpu")

    def on_device(self) -> list[ModelHandleLike]:
        with self._lock:
            return [h for h, e in self._entries.items() if e.location == "device"]

    def _record(self, action: str, entry: _Entry, reason: str = "") -> None:
        device_bytes = self._bytes_at("device")
        kinds = tuple(sorted(e.handle.kind for e in self._entries.values() if e.location == "device"))
        host_bytes = self._bytes_at("cpu")
        handle = entry.handle
        event = ModelEvent(
            action, handle.name, handle.kind, entry.bytes, device_bytes, host_bytes, kinds, reason
        )
        self.events.append(event)
        if len(self.events) > MAX_EVENTS:
            del self.events[:-MAX_EVENTS]
        if device_bytes > self.peak_device_bytes:
            self.peak_device_bytes, self.peak_on_device = device_bytes, kinds
        where = {"load": "loaded onto", "to_device": "moved to", "offload": "offloaded from"}.get(action)
        text = f"{where} {self.device}" if where else "released"
        log.info(
            "%s %s (%s)%s; on device: %s of %s",
            text,
            entry.handle.name,
            _mib(entry.bytes),
            f" — {reason}" if reason else "",
            _mib(device_bytes),
            _mib(self.vram_budget),
        )

    def device_kind_sets(self) -> list[tuple[str, ...]]:
        """The kinds on the device after every event: the tests check phases with it."""
        return [e.on_device for e in self.events]

    # --- using a model ------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, handle: ModelHandleLike) -> Iterator[LoadedModel]:
        """Bring the model onto the device (loading it on first use, making room by LRU) and
        keep it there, safe from eviction, while the `with` block runs."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None:
                entry = self._entries[handle] = _Entry(handle)
            entry.in_use += 1
            entry.release_pending = False
            self._tick += 1
            entry.last_used = self._tick
        try:
            self._bring_to_device(entry)
            yield entry.loaded
        finally:
            with self._lock:
                entry.in_use -= 1
                self._tick += 1
                entry.last_used = self._tick
                if entry.in_use == 0 and entry.release_pending:
                    self._release(entry, "released on request after use")
            if entry.in_use == 0 and entry.location == "none":
                _trim_memory()

    def _bring_to_device(self, entry: _Entry) -> None:
        if entry.location == "device":
            return
        if entry.loaded is None:
            estimate = self._estimate(entry.handle)
            with self._lock:
                released = self._make_room(entry, estimate)
            if released:
                _trim_memory()  # let the released weights go before the new ones arrive
            loaded = self._provider.load(entry.handle, self.device)
            with self._lock:
                entry.loaded = loaded
                entry.bytes = module_bytes(loaded.module)
                entry.location = "device"
                self._record("load", entry)
                self._make_room(entry, 0)  # the estimate may have been low
            return
        with self._lock:
            self._make_room(entry, entry.bytes)
            self._move(entry, self.device)
            entry.location = "device"
            self._record("to_device", entry)

    def _estimate(self, handle: ModelHandleLike) -> int:
        if self._provider.estimate is None:
            return 0
        try:
            return int(self._provider.estimate(handle, self.device))
        except Exception as exc:  # a missing file is reported by the loader, with its message
            log.debug("no size estimate for %s: %s", handle.name, exc)
            return 0

    def _make_room(self, incoming: _Entry, size: int) -> bool:
        """Evict least-recently-used models not in use until `size` more bytes fit the budget.
        Returns whether any model was released (rather than offloaded)."""
        released = False
        while self._bytes_at("device") + size > self.vram_budget:
            victims = [
                e
                for e in self._entries.values()
                if e.location == "device" and e.in_use == 0 and e is not incoming
            ]
            if not victims:
                if self._bytes_at("device") + size > self.vram_budget:
                    log.warning(
                        "%s needs %s but the device budget has %s free and the rest is in use; "
                        "going over the budget",
                        incoming.handle.name,
                        _mib(size),
                        _mib(max(0, self.vram_budget - self._bytes_at("device"))),
                    )
                return released
            victim = min(victims, key=lambda e: e.last_used)
            reason = f"making room for {incoming.handle.name}"
            if self._bytes_at("cpu") + victim.bytes <= self.ram_budget:
                self._offload(victim, reason)
            else:
                self._release(victim, reason + "; host RAM budget full")
                released = True
        return released

    def _move(self, entry: _Entry, device: torch.device) -> None:
        assert entry.loaded is not None
        entry.loaded.module.to(device)
        entry.loaded.device = device

    def _offload(self, entry: _Entry, reason: str = "") -> None:
        if self.device.type != "cpu":
            try:
                self._move(entry, torch.device("cpu"))
            except Exception as exc:  # some quantized layers cannot move between devices
                self._release(entry, f"could not offload ({exc}); released instead")
                return
        entry.location = "cpu"
        self._record("offload", entry, reason)

    def _release(self, entry: _Entry, reason: str = "") -> None:
        if entry.in_use:
            entry.release_pending = True
            return
        was_loaded = entry.location != "none"
        entry.loaded = None
        entry.location = "none"
        if was_loaded:
            self._record("release", entry, reason)
        self._entries.pop(entry.handle, None)

    # --- explicit control (ModelOffload node, POST /free) --------------------------------------

    def offload(self, handle: ModelHandleLike) -> None:
        """Move a model off the device into host RAM (released instead when the RAM budget
        cannot hold it). On a CPU-only machine it stays where it is in memory and moves from the
        device budget's books to the RAM budget's."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None or entry.location != "device":
                return
            if entry.in_use:
                log.warning("%s is in use; not offloading it", handle.name)
                return
            while self._bytes_at("cpu") + entry.bytes > self.ram_budget:
                host = [e for e in self._entries.values() if e.location == "cpu" and e.in_use == 0]
                if not host or entry.bytes > self.ram_budget:  # never fits: keep the others
                    self._release(entry, "host RAM budget cannot hold it")
                    break
                self._release(min(host, key=lambda e: e.last_used), f"making host RAM room for {handle.name}")
            else:
                self._offload(entry, "requested")
        _trim_memory()

    def release(self, handle: ModelHandleLike) -> None:
        """Drop a model's weights entirely (after its current use, if it is in use)."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None:
                self._release(entry, "requested")
        _trim_memory()

    def release_all(self) -> None:
        """Drop every model (those in use as soon as their use ends): POST /free, out of memory."""
        with self._lock:
            for entry in list(self._entries.values()):
                self._release(entry, "release all")
        _trim_memory()

    def is_loaded(self, handle: ModelHandleLike) -> bool:
        with self._lock:
            entry = self._entries.get(handle)
            return entry is not None and entry.loaded is not None

    def location(self, handle: ModelHandleLike) -> str:
        with self._lock:
            entry = self._entries.get(handle)
            return entry.location if entry is not None else "none"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            loaded = [
                {
                    "name": e.handle.name,
                    "kind": e.handle.kind,
                    **_describe(e.handle),
                    "bytes": e.bytes,
                    "location": e.location,
                    "in_use": e.in_use > 0,
                }
                for e in self._entries.values()
                if e.loaded is not None
            ]
            return {
                "device": str(self.device),
                "vram_budget": self.vram_budget,
                "ram_budget": self.ram_budget,
                "device_bytes": self._bytes_at("device"),
                "host_bytes": self._bytes_at("cpu"),
                "peak_device_bytes": self.peak_device_bytes,
                "demo_only": bool(self._provider.demo_only()),
                "loaded": loaded,
            }
