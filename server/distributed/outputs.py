"""Files travel through Redis, so front ends and workers share no disk.

Outputs: when a node reports files (`executed` with `{"images": [{filename, subfolder, type}]}`,
type output or temp), the worker reads them from its own folders and stores each under its name
(`{fluxloom}:file:output/sub/name.png`, a hash of digest + bytes, kept `file_ttl`). Workers
name their files independently (two may both write `ComfyUI_00001_.png`), so a name that holds
another file already is taken as `name (1).png` and the event and the result say so. The front
end writes a prompt's files into its output folder before relaying its `executed` event, and
`/view` of a file it does not have (made for another front end, or before a restart) fetches it.

Inputs: images a prompt loads from the front end's input folder (combos with `image_upload`)
travel with it, by content digest, and the worker writes them into its own input folder first.

One prompt's files may total `max_output_bytes` (`--max-output-bytes`); above it the prompt
fails with a message that names the setting.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from nodes.base import Combo, NodeEnv, NodeRegistry
from server.atomic import write_atomic
from server.distributed.config import file_id, retrying
from server.distributed.redis_queue import RedisQueue
from server.security import UnsafePath, safe_join

log = logging.getLogger("fluxloom.distributed")

FILE_TYPES = ("output", "temp")
SETTING = "--max-output-bytes (on the front ends and the workers)"


class FilesTooLarge(Exception):
    """A prompt's files are over the bound of what travels through Redis."""


def folder_of(env: NodeEnv, kind: str) -> Path | None:
    return {"output": env.output_dir, "temp": env.temp_dir, "input": env.input_dir}.get(kind)


def file_entries(ui: dict[str, Any]) -> list[dict[str, Any]]:
    """The `{filename, subfolder, type}` entries of a node's UI output that name output files."""
    found = []
    for value in ui.values() if isinstance(ui, dict) else ():
        for item in value if isinstance(value, list) else ():
            if (
                isinstance(item, dict)
                and isinstance(item.get("filename"), str)
                and (item.get("type") or "output") in FILE_TYPES
                and isinstance(item.get("subfolder") or "", str)
            ):
                found.append(item)
    return found


def _too_large(what: str, total: int, limit: int) -> FilesTooLarge:
    return FilesTooLarge(
        f"{what} total {total / 2**20:.1f} MiB, over the {limit / 2**20:.1f} MiB that may travel "
        f"through the queue; raise {SETTING}, or make smaller images"
    )


class OutputShipper:
    """Sends one prompt's output files to Redis as its nodes report them (worker side)."""

    def __init__(self, queue: RedisQueue, env: NodeEnv, limit: int) -> None:
        self.queue, self.env, self.limit = queue, env, limit
        self.total = 0
        self.failure: FilesTooLarge | None = None
        self.failed_node: str | None = None
        self._names: dict[tuple[str, str, str], str] = {}  # local file -> its name in Redis

    def ship(self, node: str, ui: dict[str, Any]) -> dict[str, Any]:
        """Store the node's files; the UI output as the front end will see it (renamed files)."""
        if self.failure is not None:
            return ui
        out = copy.deepcopy(ui)
        for entry in file_entries(out):
            kind, sub = entry.get("type") or "output", entry.get("subfolder") or ""
            key = (kind, sub, entry["filename"])
            if key not in self._names:
                try:
                    self._names[key] = self._store(kind, sub, entry["filename"])
                except FilesTooLarge as exc:
                    self.failure, self.failed_node = exc, node
                    return ui
            entry["filename"] = self._names[key]
        return out

    def rename(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """The prompt's UI outputs with the names the files have in Redis."""
        out = copy.deepcopy(outputs)
        for ui in out.values():
            for entry in file_entries(ui):
                key = (entry.get("type") or "output", entry.get("subfolder") or "", entry["filename"])
                entry["filename"] = self._names.get(key, entry["filename"])
        return out

    def _store(self, kind: str, sub: str, filename: str) -> str:
        folder = folder_of(self.env, kind)
        try:
            data = safe_join(folder, sub, filename).read_bytes()
        except (OSError, UnsafePath) as exc:
            log.warning("output %s/%s/%s cannot be read: %s", kind, sub, filename, exc)
            return filename
        self.total += len(data)
        if self.total > self.limit:
            raise _too_large("the prompt's output files", self.total, self.limit)
        digest = hashlib.sha256(data).hexdigest()
        stem, ext = os.path.splitext(filename)
        name, i = filename, 1

        # Redis may be restarting: the file waits for it, as the result will.
        def put(n: str) -> bool:
            return self.queue.put_file(file_id(kind, sub, n), digest, data)

        while not retrying(lambda n=name: put(n), what="sending a file", log=log):
            name, i = f"{stem} ({i}){ext}", i + 1
        return name


def fetch_file(queue: RedisQueue, env: NodeEnv, kind: str, sub: str, filename: str) -> Path | None:
    """Write a file from Redis into this front end's folder (unless it is there); its path, or
    None when Redis does not have it (never made, or expired)."""
    folder = folder_of(env, kind)
    if folder is None or kind not in FILE_TYPES:
        return None
    try:
        path = safe_join(folder, sub, filename)
    except UnsafePath:
        return None
    if path.is_file():
        return path
    data = queue.redis.hget(queue.keys.file(kind, sub, filename), "data")
    if data is None:
        return None
    write_atomic(path, data)
    return path


def fetch_outputs(queue: RedisQueue, env: NodeEnv, ui: dict[str, Any]) -> None:
    for entry in file_entries(ui):
        kind, sub = entry.get("type") or "output", entry.get("subfolder") or ""
        if fetch_file(queue, env, kind, sub, entry["filename"]) is None:
            log.warning("output %s of a worker is not in the queue", file_id(kind, sub, entry["filename"]))


# --- inputs -------------------------------------------------------------------------------------


def upload_inputs(
    queue: RedisQueue, registry: NodeRegistry, env: NodeEnv, prompt: dict[str, Any], limit: int
) -> dict[str, str]:
    """Store the input images a prompt loads (by digest); `{name: digest}` for the worker."""
    found: dict[str, str] = {}
    total = 0
    for node in prompt.values():
        d = registry.get(node.get("class_type", ""))
        if d is None:
            continue
        for inp in d.inputs:
            value = node.get("inputs", {}).get(inp.name)
            if not (isinstance(inp.spec, Combo) and inp.spec.image_upload and isinstance(value, str)):
                continue
            try:
                data = safe_join(env.input_dir, value).read_bytes()
            except (OSError, UnsafePath):
                continue  # validation named it already, or the node reports it
            total += len(data)
            if total > limit:
                raise _too_large("the prompt's input images", total, limit)
            digest = hashlib.sha256(data).hexdigest()
            key = queue.keys.input(digest)
            queue.redis.set(key, data, px=int(queue.cfg.file_ttl * 1000), nx=True)
            queue.redis.pexpire(key, int(queue.cfg.file_ttl * 1000))
            found[value] = digest
    return found


def download_inputs(queue: RedisQueue, env: NodeEnv, inputs: dict[str, str]) -> None:
    """Put a prompt's input images into this worker's input folder (same names)."""
    for name, digest in inputs.items():
        path = safe_join(env.input_dir, name)
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            continue
        key = queue.keys.input(digest)
        data = retrying(lambda key=key: queue.redis.get(key), what="reading an input", log=log)
        if data is None:
            raise FileNotFoundError(f"input image {name!r} is no longer in the queue (expired)")
        write_atomic(path, data)
