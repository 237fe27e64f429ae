"""The route table: every HTTP route once, registered both at `/PATH` and `/api/PATH` (as
ComfyUI does). `server.openapi` documents the same table, and a test checks that the two agree
with what the router really serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from server.routes import files, info, prompt, workflows

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    api_alias: bool = True  # also served under /api/


ROUTES: tuple[Route, ...] = (
    Route("POST", "/prompt", prompt.post_prompt),
    Route("GET", "/prompt", prompt.get_prompt),
    Route("GET", "/queue", prompt.get_queue),
    Route("POST", "/queue", prompt.post_queue),
    Route("GET", "/history", prompt.get_history),
    Route("GET", "/history/{prompt_id}", prompt.get_history_item),
    Route("POST", "/history", prompt.post_history),
    Route("POST", "/interrupt", prompt.post_interrupt),
    Route("POST", "/free", prompt.post_free),
    Route("GET", "/jobs/{prompt_id}", prompt.get_job),
    Route("GET", "/object_info", info.get_object_info),
    Route("GET", "/object_info/{node_class}", info.get_object_info_class),
    Route("GET", "/system_stats", info.get_system_stats),
    Route("GET", "/view", files.get_view),
    Route("POST", "/upload/image", files.post_upload_image),
    Route("GET", "/workflows", workflows.list_workflows),
    Route("GET", "/workflows/{name}", workflows.get_workflow),
    Route("PUT", "/workflows/{name}", workflows.put_workflow),
    Route("DELETE", "/workflows/{name}", workflows.delete_workflow),
    Route("POST", "/workflows/{name}/queue", workflows.queue_workflow),
)


def add_routes(app: web.Application, ws_handler: Handler, openapi_handler: Handler) -> None:
    table = (
        *ROUTES,
        Route("GET", "/ws", ws_handler),
        Route("GET", "/openapi.json", openapi_handler),
    )
    for r in table:
        for path in (r.path, "/api" + r.path) if r.api_alias else (r.path,):
            if r.method == "GET" and r.path != "/ws":
                app.router.add_get(path, r.handler)  # with HEAD, as HTTP wants
            else:
                app.router.add_route(r.method, path, r.handler)
    # Last, so that every route above wins: the canvas, and JSON 404s for anything unknown.
    app.router.add_route("*", "/{path:.*}", files.get_static)
