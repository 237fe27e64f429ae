"""The route table: every HTTP route once, registered both at `/PATH` and `/api/PATH` (as
ComfyUI does), except the few ComfyUI itself serves at one place only (its jobs API under
`/api/jobs`, the frontend's static `/templates`, `/extensions`, `/user.css`). `server.openapi`
documents the same table, and a test checks that the two agree with what the router really
serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from server.routes import files, frontend_info, info, internal, jobs, prompt, userdata, workflows

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
    # fluxloom's job status; `/api/jobs/{id}` is ComfyUI's job shape (routes/jobs.py).
    Route("GET", "/jobs/{prompt_id}", prompt.get_job, api_alias=False),
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
    # The official ComfyUI frontend (--frontend comfyui) also calls these.
    Route("GET", "/api/jobs", jobs.list_jobs, api_alias=False),
    Route("POST", "/api/jobs/cancel", jobs.cancel_jobs, api_alias=False),
    Route("GET", "/api/jobs/{job_id}", jobs.get_job, api_alias=False),
    Route("POST", "/api/jobs/{job_id}/cancel", jobs.cancel_job, api_alias=False),
    Route("GET", "/users", userdata.get_users),
    Route("GET", "/settings", userdata.get_settings),
    Route("POST", "/settings", userdata.post_settings),
    Route("GET", "/settings/{id}", userdata.get_setting),
    Route("POST", "/settings/{id}", userdata.post_setting),
    Route("GET", "/userdata", userdata.list_userdata),
    Route("GET", "/v2/userdata", userdata.list_userdata_v2),
    Route("GET", "/userdata/{file}", userdata.get_userdata),
    Route("POST", "/userdata/{file}", userdata.post_userdata),
    Route("DELETE", "/userdata/{file}", userdata.delete_userdata),
    Route("POST", "/userdata/{file}/move/{dest}", userdata.move_userdata),
    Route("GET", "/extensions", frontend_info.get_extensions),
    Route("GET", "/features", frontend_info.get_features),
    Route("GET", "/i18n", frontend_info.get_i18n),
    Route("GET", "/global_subgraphs", frontend_info.get_global_subgraphs),
    Route("GET", "/global_subgraphs/{id}", frontend_info.get_global_subgraph),
    Route("GET", "/embeddings", frontend_info.get_embeddings),
    Route("GET", "/experiment/models", frontend_info.get_model_folders),
    Route("GET", "/experiment/models/{folder}", frontend_info.get_model_files),
    Route("GET", "/view_metadata/{folder_name}", frontend_info.get_view_metadata),
    Route("GET", "/workflow_templates", frontend_info.get_workflow_templates),
    Route("GET", "/templates/{path:.*}", frontend_info.get_template_file, api_alias=False),
    Route("GET", "/user.css", frontend_info.get_user_css, api_alias=False),
    Route("GET", "/extensions/{name}/{path:.*}", files.get_extension_file, api_alias=False),
    # ComfyUI's /internal routes (its frontend's Console panel, folder paths), not under /api.
    Route("GET", "/internal/logs", internal.get_logs, api_alias=False),
    Route("GET", "/internal/logs/raw", internal.get_raw_logs, api_alias=False),
    Route("PATCH", "/internal/logs/subscribe", internal.subscribe_logs, api_alias=False),
    Route("GET", "/internal/folder_paths", internal.get_folder_paths, api_alias=False),
    Route("GET", "/internal/files/{directory_type}", internal.get_files, api_alias=False),
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
