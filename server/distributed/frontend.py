"""A distributed front end: `fluxloom serve --queue redis://…`. It serves the same HTTP and
websocket API as the embedded server, loads no model, and keeps no queue of its own: prompts go
to Redis (redis_store.py), workers run them, their events come back through relay.py and their
files through outputs.py.

`FrontEnd` is what the routes ask of the distributed side (AppState.cluster) and stands in for
the embedded worker thread (AppState.worker: interrupt, free).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from nodes.base import NodeEnv, NodeRegistry
from server import events
from server.cache import OutputCache
from server.distributed.affinity import catalog_inputs, catalog_key, catalog_registry, refusal, requirements
from server.distributed.config import ClusterConfig, redis_errors, text
from server.distributed.janitor import Janitor
from server.distributed.outputs import fetch_file, fetch_outputs
from server.distributed.redis_queue import RedisQueue
from server.distributed.relay import EventRelay
from server.executor import Executor
from server.prepare import PreparedPrompt
from server.runtime import Runtime, ensure_example_input
from server.security import json_error

log = logging.getLogger("fluxloom.distributed")

ID_FILE = "frontend-id"


def frontend_id(data_dir: Path) -> str:
    """This front end's name on the queue, kept in its data dir: after a restart it is the same
    front end (its prompts' late events still reach it)."""
    path = Path(data_dir) / ID_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        name = f"fe-{uuid.uuid4().hex[:12]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name, encoding="utf-8")
        return name


class FrontEnd:
    def __init__(
        self, cfg: ClusterConfig, registry: NodeRegistry, data_dir: Path, q: RedisQueue | None = None
    ):
        self.cfg = cfg
        self.q = q or RedisQueue(cfg)
        self.frontend_id = frontend_id(data_dir)
        self.env = NodeEnv(
            models_dir=Path(data_dir) / "no-models",  # never read: workers answer model choices
            input_dir=Path(data_dir) / "input",
            output_dir=Path(data_dir) / "output",
            temp_dir=Path(data_dir) / "temp",
        )
        self.registry = catalog_registry(registry, self.choices)
        self._catalog_keys = {catalog_key(d.class_type, i.name) for d, i in catalog_inputs(registry)}
        self.env.prompt_hooks.append(self._demo_hook)
        self._cache: tuple[float, dict, dict] | None = None
        self._cache_lock = threading.Lock()
        self.relay: EventRelay | None = None
        self.janitor = Janitor(self.q, f"frontend:{self.frontend_id}")

    # --- the workers' advertisements (cached briefly) ------------------------------------

    def _workers(self) -> tuple[dict[str, dict], dict[str, dict]]:
        """(adverts, catalogs) of the live workers."""
        with self._cache_lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < min(1.0, self.cfg.beat / 2):
                return self._cache[1], self._cache[2]
            import json

            names = sorted(text(n) for n in self.q.redis.smembers(self.q.keys.workers))
            pipe = self.q.redis.pipeline(transaction=False)
            for n in names:
                pipe.get(self.q.keys.worker(n))
                pipe.get(self.q.keys.catalog(n))
            got = pipe.execute()
            adverts, catalogs = {}, {}
            for i, n in enumerate(names):
                if got[2 * i] is not None and got[2 * i + 1] is not None:
                    adverts[n] = json.loads(got[2 * i])
                    catalogs[n] = json.loads(got[2 * i + 1])
            self._cache = (time.monotonic(), adverts, catalogs)
            return adverts, catalogs

    def choices(self, key: str) -> list[str]:
        """A catalog combo's choices: what any live worker offers."""
        return sorted({c for cat in self._workers()[1].values() for c in cat.get(key, ())})

    def _demo_hook(self, prompt: dict, env: NodeEnv) -> list[str]:
        """When every worker has only the demo model, a model no worker has is pointed at it (as
        the embedded server does on a machine with only the demo model)."""
        adverts, _ = self._workers()
        if not adverts or not all(a.get("demo_only") for a in adverts.values()):
            return []
        warnings: list[str] = []
        for node in prompt.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            for name, value in (inputs or {}).items() if isinstance(inputs, dict) else ():
                key = catalog_key(str(node.get("class_type")), name)
                if key not in self._catalog_keys or not isinstance(value, str):
                    continue
                offered = self.choices(key)
                if value not in offered and len(offered) == 1:
                    inputs[name] = offered[0]
                    message = (
                        f"{name} '{value}' is not installed on any worker; using the demo model "
                        f"{offered[0]} (random weights: images are noise)"
                    )
                    if message not in warnings:
                        warnings.append(message)
        return warnings

    # --- what the routes ask ---------------------------------------------------------------

    def refuse(self, prepared: PreparedPrompt) -> dict[str, Any] | None:
        """The 400 body for a prompt no live worker can run (None when one can)."""
        reason = refusal(requirements(prepared.prompt, self.registry), self._workers()[1])
        if reason is None:
            return None
        return events.error_body(
            events.error_item("no_worker_can_run", "Prompt cannot run on any worker", reason)
        )

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt a running prompt (without an id: those queued through this front end)."""
        if prompt_id is None:
            ids = [
                pid
                for pid, r in self.q.records([text(p) for p in self.q.redis.smembers(self.q.keys.running)])
                if r.get("origin") == self.frontend_id
            ]
        else:
            ids = [prompt_id]
        done = False
        for pid in ids:
            worker = self.q.flag_interrupt(pid)
            if worker:
                self.q.send_control(worker, "interrupt", prompt_id=pid)
                done = True
        return done

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        self.q.send_control(
            "*", "free", unload_models="1" if unload_models else "0", free_memory="1" if free_memory else "0"
        )

    def progress(self, prompt_id: str) -> dict[str, Any]:
        """`{node, value, max}` of a running prompt: from its events when they come here, else
        from its worker's last heartbeat."""
        if self.relay is not None and prompt_id in self.relay.progress:
            return dict(self.relay.progress[prompt_id])
        r = self.q.record(prompt_id) or {}
        return {
            "node": r.get("node") or None,
            "value": int(r.get("value") or 0),
            "max": int(r.get("max") or 0),
        }

    def fetch_file(self, kind: str, subfolder: str, filename: str) -> Path | None:
        return fetch_file(self.q, self.env, kind, subfolder, filename)

    def stats(self) -> dict[str, Any]:
        """`/system_stats`'s `fluxloom` entry: the workers and what they hold (the canvas's
        status line reads `loaded` and `demo_only`)."""
        adverts, catalogs = self._workers()
        workers, loaded = [], []
        for name, a in adverts.items():
            models = a.get("models") or {}
            for m in models.get("loaded", []):
                loaded.append({**m, "name": f"{name}: {m.get('name')}", "worker": name})
            workers.append(
                {
                    **{
                        k: a.get(k)
                        for k in ("name", "host", "pid", "state", "prompt_id", "loaded", "demo_only")
                    },
                    **{k: a.get(k) for k in ("model_loads", "prompts_run", "current", "started")},
                    "device": models.get("device"),
                    "installed": sorted({v for vs in catalogs.get(name, {}).values() for v in vs}),
                    "model_manager": models,
                }
            )
        return {
            "mode": "distributed",
            "queue": self.cfg.redacted_url(),
            "frontend": self.frontend_id,
            "device": f"{len(workers)} worker{'s' if len(workers) != 1 else ''}",
            "demo_only": bool(workers) and all(w["demo_only"] for w in workers),
            "loaded": loaded,
            "workers": workers,
        }

    # --- life ------------------------------------------------------------------------------

    def start(self, deliver: Any, queue_changed: Any, wants_previews: Any = lambda client_id: True) -> None:
        """Relay this front end's events (`deliver(event, data, client_id)` and
        `queue_changed()` are called from the relay thread) and sweep dead letters;
        `wants_previews(client_id)` says whether a live preview would reach anybody."""
        self.relay = EventRelay(
            self.q,
            self.frontend_id,
            deliver,
            queue_changed,
            lambda ui: fetch_outputs(self.q, self.env, ui),
            wants_previews,
        )
        self.relay.start()
        self.janitor.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self.relay is not None:
            self.relay.stop()
        self.janitor.stop()


def create_frontend(cfg: ClusterConfig, registry: NodeRegistry, data_dir: Path) -> tuple[Runtime, FrontEnd]:
    """The front end and the runtime its routes use: the registry with the workers' model
    choices, its own input/output folders, no model manager."""
    frontend = FrontEnd(cfg, registry, data_dir)
    env = frontend.env
    for d in (env.input_dir, env.output_dir, env.temp_dir):
        d.mkdir(parents=True, exist_ok=True)
    ensure_example_input(env.input_dir)
    runtime = Runtime(
        registry=frontend.registry, env=env, executor=Executor(frontend.registry, env, OutputCache(0))
    )
    return runtime, frontend


def queue_errors(cfg: ClusterConfig) -> Any:
    """Middleware: a request that needs Redis while it is unreachable gets 503 naming it."""
    errors = redis_errors()

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors as exc:
            return json_error(
                503,
                "queue_unavailable",
                f"the queue (Redis at {cfg.redacted_url()}) cannot be reached: {exc}",
            )

    return middleware
