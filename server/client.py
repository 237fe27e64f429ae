"""`fluxloom queue NAME_OR_FILE --server URL [--set NODE.INPUT=VALUE ...] [--wait]`: queue a saved
workflow (by name) or a workflow file (JSON or PNG, converted on the server) on a running server;
with --wait, follow its progress on the websocket and print where its images are."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from server.validation import format_errors
from server.workflow_io import WorkflowError, load_workflow, parse_override

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class ClientError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _request(ref: str, overrides: dict[str, Any], client_id: str) -> tuple[str, dict[str, Any]]:
    """(endpoint, body) for a workflow file or a saved workflow's name."""
    path = Path(ref)
    if path.is_file():
        try:
            data = load_workflow(path)
        except WorkflowError as exc:
            raise ClientError(str(exc), EXIT_INVALID) from None
        return "/prompt", {"prompt": data, "client_id": client_id, "set": overrides}
    name = ref[: -len(".json")] if ref.endswith(".json") else ref
    return f"/workflows/{quote(name, safe='')}/queue", {"set": overrides, "client_id": client_id}


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, json=body) as r:
        data = await r.json(content_type=None)
        if r.status == 400 and data.get("node_errors"):
            raise ClientError(format_errors(data, body.get("prompt")), EXIT_INVALID)
        if r.status >= 400:
            raise ClientError(
                f"server answered {r.status}: {data.get('error', {}).get('message', data)}", EXIT_INVALID
            )
        return data


async def _follow(ws: aiohttp.ClientWebSocketResponse, prompt_id: str, quiet: bool) -> None:
    """Print node and step progress to stderr until the prompt is done."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        m = json.loads(msg.data)
        data = m.get("data", {})
        if data.get("prompt_id") != prompt_id:
            continue
        if m["type"] == "executing":
            if data["node"] is None:
                return
            if not quiet:
                print(f"▶ node {data['node']}", file=sys.stderr)
        elif m["type"] == "progress" and not quiet:
            print(f"  step {data['value']}/{data['max']}", file=sys.stderr)
        elif m["type"] == "execution_cached" and data.get("nodes") and not quiet:
            print(f"cached: {', '.join(data['nodes'])}", file=sys.stderr)


async def _job(session: aiohttp.ClientSession, base: str, prompt_id: str) -> dict[str, Any]:
    """The finished job; polls /jobs when the websocket went away early."""
    while True:
        async with session.get(f"{base}/jobs/{prompt_id}") as r:
            job = await r.json(content_type=None)
        if r.status >= 400:  # e.g. another client cleared the history as the prompt finished
            message = job.get("error", {}).get("message", job) if isinstance(job, dict) else job
            raise ClientError(f"job {prompt_id}: server answered {r.status}: {message}")
        if job.get("status") not in ("pending", "running"):
            return job
        await asyncio.sleep(0.25)


async def _queue(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    base = args.server.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    client_id = uuid.uuid4().hex
    endpoint, body = _request(args.workflow, overrides, client_id)
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as session:
        if not args.wait:
            queued = await _post(session, base + endpoint, body)
            print(json.dumps(queued) if args.json else queued["prompt_id"])
            return EXIT_OK
        # Listen before queueing, so no message of this prompt can be missed.
        async with session.ws_connect(f"{base}/ws?clientId={client_id}") as ws:
            queued = await _post(session, base + endpoint, body)
            if not args.json:
                print(f"queued {queued['prompt_id']}", file=sys.stderr)
            await _follow(ws, queued["prompt_id"], args.json)
        job = await _job(session, base, queued["prompt_id"])
    return _report(args, base, job)


def _report(args: argparse.Namespace, base: str, job: dict[str, Any]) -> int:
    for f in job.get("files", []):
        query = urlencode({k: f[k] for k in ("filename", "subfolder", "type")})
        f["url"] = f"{base}/view?{query}"
    if args.json:
        print(json.dumps(job, indent=2))
    elif job["status"] == "success":
        for f in job.get("files", []):
            print(f"{f['path']}\t{f['url']}")
        for nid, ui in job.get("outputs", {}).items():
            for text in ui.get("text", []):
                print(f"{nid}: {text}")
    elif job["status"] == "interrupted":
        print("interrupted", file=sys.stderr)
    else:
        e = job.get("error") or {}
        where = (
            f"node {e.get('node_id')} ({e.get('node_type')}, {e.get('node_title')!r}): "
            if e.get("node_id")
            else ""
        )
        print(f"error in {where}{e.get('exception_message')}", file=sys.stderr)
    return EXIT_OK if job["status"] == "success" else EXIT_FAILED


def queue_main(args: argparse.Namespace) -> int:
    try:
        overrides = dict(parse_override(o) for o in args.overrides)
        return asyncio.run(_queue(args, overrides))
    except WorkflowError as exc:
        print(f"fluxloom queue: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ClientError as exc:
        print(f"fluxloom queue: {exc}", file=sys.stderr)
        return exc.code
    except aiohttp.ClientError as exc:
        print(f"fluxloom queue: cannot reach the server at {args.server}: {exc}", file=sys.stderr)
        return EXIT_FAILED
