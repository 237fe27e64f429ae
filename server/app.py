"""The aiohttp application: routes, websocket hub, security, the worker thread, and
`fluxloom serve`.

One prompt's path: `routes/prompt.py` validates and writes it to `store.py` (SQLite); the thread
in `worker.py` claims it and runs `executor.py`; executor events cross to the event loop with
`call_soon_threadsafe` and leave through `ws.py`; the result lands in the history row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nodes.base import NodeRegistry
from server.bridge import LoopBridge
from server.frontend import (
    FRONTEND,
    FrontendNotInstalled,
    FrontendState,
    comfyui_static_dir,
    fluxloom_extension_dir,
    web_directories,
)
from server.limits import body_deadline, handler_args
from server.openapi import describe
from server.paths import web_dir
from server.previews import PreviewRenderer
from server.routes import add_routes
from server.routes.common import STATE, AppState, BadRequest, Limits, status_payload
from server.routes.frontend_info import server_features
from server.routes.internal import install_log_buffer, stream_logs_to_subscribers
from server.runtime import Runtime, config_from_args, create_runtime
from server.security import BindRefused, SecurityConfig, check_bind, json_error, make_middleware
from server.store import PromptStore
from server.worker import Worker
from server.ws import Hub

log = logging.getLogger("fluxloom.server")

EXTRA_NODES_ENV = "FLUXLOOM_EXTRA_NODES"


@dataclass
class ServerConfig:
    data_dir: Path
    security: SecurityConfig = field(default_factory=SecurityConfig)
    web_dir: Path = field(default_factory=web_dir)
    limits: Limits = field(default_factory=Limits)
    frontend: str = "fluxloom"  # or "comfyui": web_dir is then the official frontend's static site
    # Frontend extensions by name (custom nodes' WEB_DIRECTORY); fluxloom's own is always added.
    extension_dirs: dict[str, Path] = field(default_factory=dict)
    # A distributed front end (server/distributed/frontend.py: prompts go to Redis, workers run
    # them); None: the embedded SQLite queue and worker thread.
    cluster: Any = None
    preview_method: str = "auto"  # live previews while sampling (server/previews.py); "none": off


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error is JSON: our own BadRequest, aiohttp's 404/405/413, and unexpected bugs."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status, "http_error"
        )
        response = json_error(exc.status, kind, f"{exc.reason}: {request.method} {request.path}")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal_error", f"{type(exc).__name__}: {exc}")


@web.middleware
async def method_not_allowed(request: web.Request, handler: Any) -> web.StreamResponse:
    """A known path with a method it does not serve is a 405 with `Allow`, not the static
    catch-all's 404 (aiohttp would say 405 itself, but the catch-all matches every method)."""
    route = request.match_info.route
    if route.resource is None or route.resource.canonical != "/{path}":
        return await handler(request)
    exact: set[str] = set()  # routes of this very path (/api/jobs/cancel) ...
    templated: set[str] = set()  # ... win over templates that also match it (/api/jobs/{job_id})
    for resource in request.app.router.resources():
        if resource is not route.resource and (methods := (await resource.resolve(request))[1]):
            (templated if "{" in resource.canonical else exact).update(methods)
    allowed = exact or templated
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
    return await handler(request)


def _hub(cfg: ServerConfig, store: Any) -> Hub:
    """The websocket hub, reporting the queue of `store` (SQLite, or Redis for a front end)."""
    return Hub(
        status=lambda: status_payload(store),
        features=lambda: server_features(cfg.limits.max_upload_bytes),
        outbox_bytes=cfg.limits.ws_outbox_bytes,
        close_grace=cfg.limits.ws_close_grace,
    )


def create_app(runtime: Runtime, cfg: ServerConfig) -> web.Application:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if cfg.cluster is not None:
        return _create_frontend_app(runtime, cfg)
    store = PromptStore(cfg.data_dir / "queue.sqlite3", max_history=cfg.limits.max_history)
    for pid in store.recover():
        log.warning("prompt %s was running when the server stopped; reported as failed", pid)
    hub = _hub(cfg, store)
    bridge = LoopBridge()
    previews = PreviewRenderer(cfg.preview_method)
    worker = Worker(
        store,
        runtime,
        notify=lambda event, data, client_id: bridge.call(hub.send, event, data, client_id),
        queue_changed=lambda: bridge.call(hub.broadcast_status),
        previews=previews,
        wants_previews=hub.wants_previews,
    )
    st = AppState(
        runtime=runtime,
        store=store,
        hub=hub,
        worker=worker,
        data_dir=cfg.data_dir,
        web_dir=cfg.web_dir,
        limits=cfg.limits,
    )

    async def stop_work() -> None:
        await asyncio.to_thread(worker.stop)
        previews.close()
        store.close()

    return _application(st, cfg, bridge, worker.start, stop_work)


def _create_frontend_app(runtime: Runtime, cfg: ServerConfig) -> web.Application:
    """The same application on the distributed queue: no worker thread, no model."""
    from server.distributed.frontend import queue_errors
    from server.distributed.redis_store import RedisStore

    frontend = cfg.cluster
    store = RedisStore(frontend.q, frontend)
    hub = _hub(cfg, store)
    bridge = LoopBridge()
    st = AppState(
        runtime=runtime,
        store=store,
        hub=hub,
        worker=frontend,
        data_dir=cfg.data_dir,
        web_dir=cfg.web_dir,
        limits=cfg.limits,
        cluster=frontend,
    )

    previews_on = PreviewRenderer(cfg.preview_method).enabled  # the workers draw them

    def start_work() -> None:
        frontend.start(
            deliver=lambda event, data, client_id: bridge.call(hub.send, event, data, client_id),
            queue_changed=lambda: bridge.call(hub.broadcast_status),
            wants_previews=lambda client_id: previews_on and hub.wants_previews(client_id),
        )

    async def stop_work() -> None:
        await asyncio.to_thread(frontend.stop)
        store.close()

    return _application(st, cfg, bridge, start_work, stop_work, [queue_errors(frontend.cfg)])


def _application(
    st: AppState, cfg: ServerConfig, bridge: LoopBridge, start_work: Any, stop_work: Any, extra: Any = ()
) -> web.Application:
    """The routes, middlewares and life cycle around a store and what runs its prompts."""
    # aiohttp's own limit is the largest body any route takes; JSON routes check a smaller one.
    app = web.Application(
        middlewares=[
            json_errors,
            *extra,
            make_middleware(cfg.security),
            method_not_allowed,
            body_deadline(cfg.limits),
        ],
        client_max_size=cfg.limits.max_upload_bytes + 2**20,
        handler_args=handler_args(cfg.limits),  # header timeout, one-line logs of malformed requests
    )
    app[STATE] = st
    app[FRONTEND] = FrontendState(
        data_dir=cfg.data_dir,
        workflows_dir=st.workflows_dir,
        extension_dirs={"fluxloom": fluxloom_extension_dir(), **cfg.extension_dirs},
    )
    app[FRONTEND].create_folders()
    stop_log_stream = stream_logs_to_subscribers(app, bridge.call)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(describe(served_routes(request.app)))

    add_routes(app, st.hub.handle, openapi)

    async def start(app: web.Application) -> None:
        bridge.loop = asyncio.get_running_loop()
        start_work()

    async def shutdown(app: web.Application) -> None:
        await st.hub.close_all()

    async def cleanup(app: web.Application) -> None:
        stop_log_stream()
        await stop_work()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


def served_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route the router serves, without the static catch-all."""
    out = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "*") or path == "/{path}":
            continue
        out.append((route.method, path))
    return out


def load_extra_nodes(registry: NodeRegistry, spec: str | None = None) -> list[str]:
    """The custom-nodes hook: FLUXLOOM_EXTRA_NODES="pkg.mod,other.mod". Importing a module may
    register nodes with `nodes.base.node`; a module with its own `registry` (a NodeRegistry) has
    those nodes copied into the app's registry."""
    loaded = []
    for name in filter(None, (s.strip() for s in (spec or os.environ.get(EXTRA_NODES_ENV, "")).split(","))):
        module = importlib.import_module(name)
        own = getattr(module, "registry", None)
        if isinstance(own, NodeRegistry) and own is not registry:
            for d in own:
                if d.class_type not in registry:
                    registry.register(d)
        loaded.append(name)
    return loaded


def load_registry(prog: str) -> tuple[NodeRegistry, list[str]] | int:
    """The node registry with the custom nodes of FLUXLOOM_EXTRA_NODES (and their names); an
    exit code (after saying why) when they cannot be imported. For `serve` and `worker`."""
    import nodes

    registry = nodes.load_all()
    try:
        extra = load_extra_nodes(registry)
    except ImportError as exc:
        print(f"{prog}: {EXTRA_NODES_ENV}: cannot import {exc.name or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the module itself failed while importing (a custom node's bug)
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = f" ({where.tb_frame.f_code.co_filename}:{where.tb_lineno})" if where is not None else ""
        failed = f"importing custom nodes failed{at}: {type(exc).__name__}: {exc}"
        print(f"{prog}: {EXTRA_NODES_ENV}: {failed}", file=sys.stderr)
        return 2
    if extra:
        log.info("custom nodes from %s", ", ".join(extra))
    return registry, extra


# While the worker thread runs Python (a prompt of 100,000 nodes), the event loop's thread waits
# for the interpreter after every socket call, up to its switch interval each time: 1 ms instead
# of Python's 5 answers requests 3-10x sooner then, at no cost to the run (bench/robustness.py (b)).
SWITCH_INTERVAL = 0.001


def settle_interpreter() -> None:
    """Tune the interpreter for a server whose event loop shares it with a busy worker thread:
    the switch interval above, and the objects of start-up (torch, diffusers, transformers, the
    nodes: some 360,000) moved out of the cyclic collector's reach. Otherwise each full
    collection walks them all, 190 ms with every thread stopped, whenever a large prompt's run
    makes enough new objects to trigger one. They are freed by reference counting as before."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()


def serve_main(args: argparse.Namespace) -> int:
    install_log_buffer()  # from the first line: the frontend's Console panel shows start-up too
    security = SecurityConfig(
        host=args.host, token=args.token, allow_unauthenticated=args.allow_unauthenticated
    )
    try:
        warning = check_bind(security)
    except BindRefused as exc:
        print(f"fluxloom serve: {exc}", file=sys.stderr)
        return 2
    if warning:
        log.warning("%s", warning)
    comfyui_web = None
    if getattr(args, "frontend", "fluxloom") == "comfyui":
        try:
            comfyui_web = comfyui_static_dir()
        except FrontendNotInstalled as exc:
            print(f"fluxloom serve: {exc}", file=sys.stderr)
            return 2
    loaded = load_registry("fluxloom serve")
    if isinstance(loaded, int):
        return loaded
    registry, extra = loaded
    data = Path(args.data_dir)
    limits = Limits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_history=args.max_history,
        max_nodes=args.max_nodes,
    )
    cfg = ServerConfig(data_dir=data, security=security, limits=limits, extension_dirs=web_directories(extra))
    cfg.preview_method = getattr(args, "preview_method", "auto")
    if comfyui_web is not None:
        cfg.web_dir, cfg.frontend = comfyui_web, "comfyui"
    if getattr(args, "queue", None):  # a front end of the distributed queue: no model here
        built = _distributed_frontend(args, registry, data)
        if isinstance(built, int):
            return built
        runtime, cfg.cluster = built
    else:
        config = config_from_args(
            args, output_dir=data / "output", input_dir=data / "input", temp_dir=data / "temp"
        )
        runtime = create_runtime(config, registry)
    app = create_app(runtime, cfg)
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def listening(_: str) -> None:  # run_app calls this once the socket is open
        ui = "the official ComfyUI frontend at " if cfg.frontend == "comfyui" else ""
        print(f"fluxloom: serving {ui}http://{shown}:{args.port}/ (data in {data}); Ctrl+C stops", flush=True)

    settle_interpreter()
    # run_app turns SIGINT/SIGTERM into a graceful exit: the running prompt is interrupted and
    # goes back to the head of the queue, pending prompts stay in SQLite.
    try:
        web.run_app(
            app, host=args.host, port=args.port, print=listening, shutdown_timeout=10, access_log=None
        )
    except OSError as exc:  # port taken, address not on this machine
        print(f"fluxloom serve: cannot listen on {shown}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.info("fluxloom stopped")
    return 0


def _distributed_frontend(args: argparse.Namespace, registry: NodeRegistry, data: Path) -> Any:
    """(runtime, FrontEnd) for `fluxloom serve --queue redis://…`, or an exit code."""
    from server.distributed.config import QueueUnavailable, cluster_config, connection_errors
    from server.distributed.frontend import create_frontend

    try:
        cluster = cluster_config(args)
        runtime, frontend = create_frontend(cluster, registry, data)
        frontend.q.redis.ping()
    except (QueueUnavailable, ValueError) as exc:
        print(f"fluxloom serve: {exc}", file=sys.stderr)
        return 2
    except connection_errors() as exc:
        print(f"fluxloom serve: cannot reach the queue at {cluster.redacted_url()}: {exc}", file=sys.stderr)
        return 1
    log.info("distributed front end %s on %s", frontend.frontend_id, cluster.redacted_url())
    return runtime, frontend
