"""Model manager — the low-VRAM core.

Loader nodes output `ModelHandle`s: cheap, hashable names of one part of one model, with no
weights. A consumer node asks the manager to `use(handle)`; only then are weights read (once:
loaded models are kept by handle, so re-runs do not reload). The manager keeps the models on the
device within a device budget (VRAM, or RAM on a CPU-only machine) and offloaded models within a
host-RAM budget. When a model must come onto the device and the budget would overflow, the
least-recently-used models that are not in use leave it: offloaded to host RAM while the RAM
budget allows, released otherwise. So the peak is about the larger phase of a workflow, not the
sum of every model it touches.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("fluxloom.models")

KINDS = ("CLIP", "T5", "FLUX_MODEL", "VAE")
MAX_EVENTS = 1000  # the manager's log keeps the latest events only: a server runs for weeks


@dataclass(frozen=True)
class ModelHandle:
    """What loader nodes output: names one part of one model, holds no weights."""

    kind: str  # "CLIP" | "T5" | "FLUX_MODEL" | "VAE"
    source: str  # name shown in the combo, e.g. "fluxloom-demo"
    path: str  # folder of the diffusers pipeline
    quantization: str  # "none" or one of nodes.flux.quantization.CHOICES
    dtype: str  # "auto" | "bf16" | "fp16" | "fp32"

    @property
    def name(self) -> str:
        q = "" if self.quantization == "none" else f", {self.quantization}"
        return f"{self.source}/{self.kind} ({self.dtype}{q})"

    def cache_size(self) -> int:
        return 256  # the executor's OutputCache: a handle keeps no weights alive


@dataclass
class LoadedModel:
    module: torch.nn.Module
    tokenizer: Any | None
    device: torch.device
    dtype: torch.dtype  # compute dtype


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
    handle: ModelHandle
    loaded: LoadedModel | None = None
    bytes: int = 0
    location: str = "none"  # "device" | "cpu" | "none" (not loaded yet)
    in_use: int = 0
    last_used: int = 0
    release_pending: bool = False


# A loader reads one handle's weights onto a device: (handle, device) -> LoadedModel.
Loader = Callable[[ModelHandle, torch.device], LoadedModel]
# An estimator says how many bytes a handle will take once loaded, before it is loaded.
Estimator = Callable[[ModelHandle, torch.device], int]


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


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class ModelManager:
    def __init__(
        self,
        loader: Loader,
        *,
        device: torch.device | str | None = None,
        vram_budget: int | None = None,
        ram_budget: int | None = None,
        estimator: Estimator | None = None,
        demo_only: Callable[[], bool] | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        auto_vram, auto_ram = automatic_budgets(self.device)
        self.vram_budget = int(vram_budget) if vram_budget is not None else auto_vram
        self.ram_budget = int(ram_budget) if ram_budget is not None else auto_ram
        self._loader = loader
        self._estimator = estimator
        self._demo_only = demo_only or (lambda: False)
        self._entries: dict[ModelHandle, _Entry] = {}
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

    def on_device(self) -> list[ModelHandle]:
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
    def use(self, handle: ModelHandle) -> Iterator[LoadedModel]:
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
            loaded = self._loader(entry.handle, self.device)
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

    def _estimate(self, handle: ModelHandle) -> int:
        if self._estimator is None:
            return 0
        try:
            return int(self._estimator(handle, self.device))
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

    def offload(self, handle: ModelHandle) -> None:
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

    def release(self, handle: ModelHandle) -> None:
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

    def is_loaded(self, handle: ModelHandle) -> bool:
        with self._lock:
            entry = self._entries.get(handle)
            return entry is not None and entry.loaded is not None

    def location(self, handle: ModelHandle) -> str:
        with self._lock:
            entry = self._entries.get(handle)
            return entry.location if entry is not None else "none"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            loaded = [
                {
                    "name": e.handle.name,
                    "kind": e.handle.kind,
                    "source": e.handle.source,
                    "bytes": e.bytes,
                    "location": e.location,
                    "quantization": e.handle.quantization,
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
                "demo_only": bool(self._demo_only()),
                "loaded": loaded,
            }


# --- wiring into the runtime ----------------------------------------------------------------


def load_handle(handle: ModelHandle, device: torch.device) -> LoadedModel:
    """The manager's loader: read one part of a diffusers pipeline folder."""
    from pathlib import Path

    from nodes.flux.sources import load_part

    loaded = load_part(Path(handle.path), handle.kind, handle.quantization, handle.dtype, device)
    return LoadedModel(module=loaded.module, tokenizer=loaded.tokenizer, device=device, dtype=loaded.dtype)


def estimate_handle(handle: ModelHandle, device: torch.device) -> int:
    from pathlib import Path

    from nodes.flux.sources import PARTS, estimate_bytes, resolve_dtype

    folder = Path(handle.path) / PARTS[handle.kind].subfolder
    return estimate_bytes(folder, resolve_dtype(handle.dtype, device, folder), handle.quantization)


def create_manager(models_dir, vram_budget: int | None = None, ram_budget: int | None = None, device=None):
    from nodes.flux.demo import DEMO_NAME
    from nodes.flux.sources import find_pipelines, has_single_files

    def demo_only() -> bool:
        names = set(find_pipelines(models_dir))
        return names == {DEMO_NAME} and not has_single_files(models_dir)

    return ModelManager(
        load_handle,
        device=device,
        vram_budget=vram_budget,
        ram_budget=ram_budget,
        estimator=estimate_handle,
        demo_only=demo_only,
    )


def setup_environment(env, config) -> None:
    """Called by server.runtime.create_runtime: give the nodes a model manager, write the demo
    model when no FLUX model is installed at all, and substitute it for missing models."""
    from nodes.flux.demo import ensure_demo_model
    from nodes.flux.sources import find_pipelines, has_single_files

    env.models = create_manager(env.models_dir, config.vram_budget_bytes, config.ram_budget_bytes)
    if (
        config.ensure_demo_model
        and not find_pipelines(env.models_dir)
        and not has_single_files(env.models_dir)
    ):
        log.info(
            "no FLUX model found under %s; creating the demo model (random weights, images are noise)",
            env.models_dir,
        )
        ensure_demo_model(env.models_dir)
    ensure_example_input(env.input_dir)
    env.prompt_hooks.append(substitute_demo_model)


EXAMPLE_INPUT = "fluxloom-example.png"


def ensure_example_input(input_dir) -> None:
    """Put the example image the shipped img2img workflow loads into the input folder (as
    ComfyUI ships input/example.png), unless a file of that name is already there."""
    import shutil
    from pathlib import Path

    from server.workflow_io import WORKFLOWS_DIR

    src, dest = WORKFLOWS_DIR / EXAMPLE_INPUT, Path(input_dir) / EXAMPLE_INPUT
    if src.is_file() and not dest.exists():
        with contextlib.suppress(OSError):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


def substitute_demo_model(prompt: dict, env) -> list[str]:
    """Prompt hook: when a loader names a model that is not installed and the only installed
    FLUX model is the demo, point the loader at the demo and say so. With any real model
    installed nothing is rewritten, and validation lists the installed choices."""
    from nodes.flux.demo import DEMO_NAME
    from nodes.flux.loaders import LOADER_TYPES
    from nodes.flux.sources import find_pipelines, has_single_files

    installed = set(find_pipelines(env.models_dir))
    if installed != {DEMO_NAME} or has_single_files(env.models_dir):
        return []
    warnings: list[str] = []
    for node in prompt.values():
        if not isinstance(node, dict) or node.get("class_type") not in LOADER_TYPES:
            continue
        inputs = node.get("inputs")
        source = inputs.get("source") if isinstance(inputs, dict) else None
        if isinstance(source, str) and source not in installed:
            inputs["source"] = DEMO_NAME
            message = (
                f"source '{source}' is not installed; using the demo model {DEMO_NAME} "
                "(random weights: images are noise)"
            )
            if message not in warnings:
                warnings.append(message)
    return warnings
