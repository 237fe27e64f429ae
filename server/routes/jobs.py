"""ComfyUI's jobs API, served under `/api/jobs` only (as ComfyUI does): the official frontend's
queue and assets panels read it. Backed by the SQLite queue and history (`server/store.py`).

`GET /api/jobs?status=&workflow_id=&sort_by=&sort_order=&limit=&offset=` pages through every
prompt; `GET /api/jobs/{id}` is one job with its outputs and workflow; `POST /api/jobs/cancel`
and `POST /api/jobs/{id}/cancel` cancel pending or running jobs.

fluxloom's own `GET /jobs/{prompt_id}` (without `/api`, see routes/prompt.py) keeps its shape:
ComfyUI has no route there.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.routes.common import AppState, BadRequest, read_object, state
from server.store import ERROR, INTERRUPTED, PENDING, RUNNING, SUCCESS

# ComfyUI's job statuses ↔ the store's.
JOB_STATUS = {
    PENDING: "pending",
    RUNNING: "in_progress",
    SUCCESS: "completed",
    ERROR: "failed",
    INTERRUPTED: "cancelled",
}
STORE_STATUS = {v: k for k, v in JOB_STATUS.items()}
SORT_FIELDS = ("created_at", "execution_duration")
# Output kinds the frontend can show as a job's preview (ComfyUI's list).
PREVIEWABLE = ("images", "video", "audio", "3d", "text")


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _priority(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None, int]:
    """(outputs_count, preview_output, previewable_outputs_count) of a job's outputs: a saved
    file (`type: output`) is preferred as the preview over a temporary one."""
    count = previewable = 0
    saved = temporary = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for kind, items in ui.items():
            if kind == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue  # text values are not files
                count += 1
                if kind not in PREVIEWABLE:
                    continue
                previewable += 1
                entry = {**item, "nodeId": str(node_id), "mediaType": item.get("mediaType", kind)}
                if item.get("type") == "output" and saved is None:
                    saved = entry
                elif temporary is None:
                    temporary = entry
    return count, saved or temporary, previewable


def _execution_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored execution_error, with the string fields the frontend requires never null (a
    prompt the server was running when it stopped has no node)."""
    if not error:
        return None
    out = dict(error)
    for key in ("node_id", "node_type", "exception_message", "exception_type"):
        out[key] = "" if out.get(key) is None else str(out[key])
    out["traceback"] = [str(line) for line in out.get("traceback") or []]
    return out


def job_entry(row: dict[str, Any]) -> dict[str, Any]:
    """One job as ComfyUI's list shows it (`row` from PromptStore.jobs)."""
    count, preview, previewable = _outputs_summary(row["result"])
    job: dict[str, Any] = {
        "id": row["prompt_id"],
        "status": JOB_STATUS[row["status"]],
        "priority": _priority(row["number"]),
        "create_time": int(row["created"] * 1000),
        "outputs_count": count,
        "previewable_outputs_count": previewable,
    }
    if row["started_ms"] is not None:
        job["execution_start_time"] = int(row["started_ms"])
    if row["finished"] is not None and row["status"] not in (PENDING, RUNNING):
        job["execution_end_time"] = int(row["finished"] * 1000)
    if row["status"] == ERROR:
        job["execution_error"] = _execution_error(row["error"])
    if preview is not None:
        job["preview_output"] = preview
    if row["workflow_id"] is not None:
        job["workflow_id"] = str(row["workflow_id"])
    return job


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return max(-(2**62), min(int(raw), 2**62))
    except ValueError:
        raise BadRequest("invalid_request", f"{name} must be an integer") from None


async def list_jobs(request: web.Request) -> web.Response:
    """Every job, newest first by default; ComfyUI's filters, sort and pagination."""
    query = request.query
    wanted = [s.strip().lower() for s in query.get("status", "").split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STORE_STATUS]
    if unknown:
        return _bad(f"Invalid status value(s): {', '.join(unknown)}. Valid values: {', '.join(STORE_STATUS)}")
    sort_by = query.get("sort_by", "created_at").lower()
    if sort_by not in SORT_FIELDS:
        return _bad("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc").lower()
    if sort_order not in ("asc", "desc"):
        return _bad("sort_order must be 'asc' or 'desc'")
    try:
        limit, offset = _int_param(request, "limit"), _int_param(request, "offset") or 0
    except BadRequest as exc:
        return _bad(exc.message)
    if limit is not None and limit <= 0:
        return _bad("limit must be a positive integer")
    offset = max(offset, 0)
    statuses = [STORE_STATUS[s] for s in wanted] or list(JOB_STATUS)
    rows, total = state(request).store.jobs(
        statuses, query.get("workflow_id") or None, sort_by, sort_order == "desc", limit, offset
    )
    jobs = [job_entry(r) for r in rows]
    pagination = {
        "offset": offset,
        "limit": limit if limit is not None else total,  # the frontend's schema wants a number
        "total": total,
        "has_more": offset + len(jobs) < total,
    }
    return web.json_response({"jobs": jobs, "pagination": pagination})


def job_detail(st: AppState, prompt_id: str) -> dict[str, Any] | None:
    """One job with its outputs, the prompt and extra_data (the frontend reloads a job's
    workflow from `workflow.extra_data.extra_pnginfo.workflow`)."""
    row = st.store.get(prompt_id)
    if row is None:
        return None
    started = next((d.get("timestamp") for e, d in row.messages if e == "execution_start"), None)
    summary = {
        "prompt_id": row.prompt_id,
        "number": row.number,
        "status": row.status,
        "created": row.created,
        "finished": row.finished,
        "started_ms": started,
        "workflow_id": ((row.extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id"),
        "result": row.result,
        "messages": row.messages,
        "error": row.error,
    }
    job = job_entry(summary)
    job["workflow"] = {"prompt": row.prompt, "extra_data": row.extra_data}
    if row.status not in (PENDING, RUNNING):
        job["outputs"] = row.result
        entry = row.history_entry()
        job["execution_status"] = {**entry["status"], "status_str": JOB_STATUS[row.status]}
        job["execution_meta"] = entry["meta"]
    return job


async def get_job(request: web.Request) -> web.Response:
    job = job_detail(state(request), request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


def _cancel(st: AppState, prompt_id: str) -> bool:
    """Interrupt a running job or drop a pending one; a finished or unknown id is a no-op."""
    row = st.store.get(prompt_id)
    if row is None:
        return False
    if row.status == PENDING and st.store.delete_pending([prompt_id]):
        st.hub.broadcast_status()
        return True
    return st.worker.interrupt(prompt_id)


async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response({"cancelled": _cancel(state(request), request.match_info["job_id"])})


async def cancel_jobs(request: web.Request) -> web.Response:
    """Body `{"job_ids": [...]}`; best effort, `{"cancelled": true}` when any was cancelled."""
    body = await read_object(request)
    ids = body.get("job_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return _bad("job_ids must be a list of job id strings")
    st = state(request)
    cancelled = [_cancel(st, job_id) for job_id in ids]
    return web.json_response({"cancelled": any(cancelled)})
