"""GET /object_info[/{class}] and GET /system_stats, in ComfyUI's shapes."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from importlib import metadata
from typing import Any

from aiohttp import web

from server.routes.common import BadRequest, state


async def get_object_info(request: web.Request) -> web.Response:
    rt = state(request).runtime
    # Combo choices scan the models and input folders: keep that off the event loop.
    info = await asyncio.to_thread(rt.registry.object_info, rt.env)
    return web.json_response(info)


async def get_object_info_class(request: web.Request) -> web.Response:
    rt = state(request).runtime
    name = request.match_info["node_class"]
    d = rt.registry.get(name)
    if d is None:
        raise BadRequest("not_found", f"no node type {name!r}", 404)
    return web.json_response({name: await asyncio.to_thread(d.object_info, rt.env)})


def _memory() -> tuple[int, int]:
    """(total, available) host RAM in bytes."""
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return pages * size, os.sysconf("SC_AVPHYS_PAGES") * size


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _devices(ram_total: int, ram_free: int) -> list[dict[str, Any]]:
    # Only ask torch about CUDA when something already imported it (the FLUX nodes do):
    # importing torch just for this route would add seconds to the first request.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        devices = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            reserved = torch.cuda.memory_reserved(i)
            allocated = torch.cuda.memory_allocated(i)
            devices.append(
                {
                    "name": f"cuda:{i} {torch.cuda.get_device_name(i)}",
                    "type": "cuda",
                    "index": i,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": reserved,
                    "torch_vram_free": reserved - allocated,
                }
            )
        return devices
    return [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": ram_total,
            "vram_free": ram_free,
            "torch_vram_total": ram_total,
            "torch_vram_free": ram_free,
        }
    ]


def system_stats(models: Any) -> dict[str, Any]:
    ram_total, ram_free = _memory()
    stats: dict[str, Any] = {
        "system": {
            "os": os.name,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": None,
            "fluxloom_version": _version("fluxloom"),
            "python_version": sys.version,
            "pytorch_version": _version("torch"),
            "embedded_python": False,
            "platform": platform.platform(),
            "argv": sys.argv,
        },
        "devices": _devices(ram_total, ram_free),
    }
    if models is not None:
        try:
            stats["fluxloom"] = models.stats()
        except Exception as exc:  # the status line must not take the whole route down
            stats["fluxloom"] = {"error": f"{type(exc).__name__}: {exc}"}
    return stats


async def get_system_stats(request: web.Request) -> web.Response:
    st = state(request)
    stats = await asyncio.to_thread(system_stats, st.runtime.models)
    if st.cluster is not None:  # a distributed front end: the workers and what they hold
        stats["fluxloom"] = await asyncio.to_thread(st.cluster.stats)
    return web.json_response(stats)
