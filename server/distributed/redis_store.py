"""The prompt store of a distributed front end: the methods the HTTP routes call on
server/store.py's PromptStore (add, exists, pending, running, remaining, position,
delete_pending, get, history, delete_history, recover, close), answered from the shared state in
Redis, so every front end shows the same queue and history.

The queue runs FIFO per lane (see affinity.py), `front` prompts first; `position` and the order
of `GET /queue` follow the prompts' numbers, as in the embedded queue.
"""

from __future__ import annotations

import json
from typing import Any

from server import queue_items
from server.distributed.affinity import lane_for, requirements
from server.distributed.config import dumps, redis_errors, text
from server.distributed.outputs import upload_inputs
from server.distributed.redis_queue import RedisQueue
from server.store import FINISHED, PENDING, RUNNING, DuplicatePromptId, PromptRow


def to_row(prompt_id: str, r: dict[str, str]) -> PromptRow:
    def load(name: str, default: Any) -> Any:
        raw = r.get(name)
        return json.loads(raw) if raw else default

    return PromptRow(
        prompt_id=prompt_id,
        number=float(r.get("number") or 0),
        status=r.get("status", PENDING),
        prompt=load("prompt", {}),
        extra_data=load("extra_data", {}),
        outputs_to_execute=load("outputs", []),
        client_id=r.get("client_id") or None,
        result=load("result", {}),
        messages=load("messages", []),
        error=load("error", None),
        created=float(r.get("created") or 0),
        finished=float(r["finished"]) if r.get("finished") else None,
        plan=load("plan", None),
    )


def _job_summary(prompt_id: str, r: dict[str, str | None]) -> dict[str, Any]:
    """What PromptStore.jobs gives for one prompt (store.py's _job_summary)."""
    messages = json.loads(r["messages"]) if r.get("messages") else []
    extra = json.loads(r["extra_data"]) if r.get("extra_data") else {}
    workflow = (extra.get("extra_pnginfo") or {}).get("workflow") if isinstance(extra, dict) else None
    return {
        "prompt_id": prompt_id,
        "number": float(r.get("number") or 0),
        "status": r.get("status"),
        "created": float(r.get("created") or 0),
        "finished": float(r["finished"]) if r.get("finished") else None,
        "started_ms": next((d.get("timestamp") for e, d in messages if e == "execution_start"), None),
        "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None,
        "result": json.loads(r["result"]) if r.get("result") else {},
        "messages": messages,
        "error": json.loads(r["error"]) if r.get("error") else None,
    }


class RedisStore:
    def __init__(self, q: RedisQueue, frontend: Any) -> None:
        self.q = q
        self.keys = q.keys
        self.frontend = frontend  # FrontEnd: its id, registry and folders
        self._remaining = 0

    def add(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
        outputs: list[str],
        client_id: str | None,
        number: float | None = None,
        front: bool = False,
        plan: dict[str, Any] | None = None,
    ) -> float:
        fe = self.frontend
        lane = lane_for(requirements(prompt, fe.registry), front)
        inputs = upload_inputs(self.q, fe.registry, fe.env, prompt, self.q.cfg.max_output_bytes)
        fields = {
            "prompt": dumps(prompt),
            "extra_data": dumps(extra_data),
            "outputs": dumps(outputs),
            "client_id": client_id or "",
            "origin": fe.frontend_id,
            "inputs": dumps(inputs),
        }
        if plan is not None:
            fields["plan"] = dumps(plan)
        got = self.q.enqueue(prompt_id, fields, lane.lane_id, lane.meta, number=number, front=front)
        if got is None:
            raise DuplicatePromptId(f"prompt_id {prompt_id!r} is already used")
        return got

    def exists(self, prompt_id: str) -> bool:
        return bool(self.q.redis.exists(self.keys.prompt(prompt_id)))

    def _rows(self, ids: list[Any]) -> list[PromptRow]:
        return [to_row(pid, r) for pid, r in self.q.records([text(i) for i in ids])]

    def pending(self) -> list[PromptRow]:
        return self._rows(self.q.redis.zrange(self.keys.queued, 0, -1))

    def running(self) -> list[PromptRow]:
        rows = self._rows(list(self.q.redis.smembers(self.keys.running)))
        return sorted(rows, key=lambda r: (r.number, r.created))

    def remaining(self) -> int:
        """Pending + running prompts; while Redis is unreachable, the last count (the websocket
        `status` message must not fail a connection)."""
        pipe = self.q.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.queued)
        pipe.scard(self.keys.running)
        try:
            self._remaining = sum(pipe.execute())
        except redis_errors():
            pass
        return self._remaining

    def position(self, prompt_id: str) -> int | None:
        rank = self.q.redis.zrank(self.keys.queued, prompt_id)
        return None if rank is None else int(rank)

    def delete_pending(self, prompt_ids: list[str] | None = None) -> int:
        return self.q.delete_pending(None if prompt_ids is None else [str(p) for p in prompt_ids])

    def get(self, prompt_id: str) -> PromptRow | None:
        r = self.q.record(prompt_id)
        return to_row(prompt_id, r) if r is not None else None

    def history(self, max_items: int | None = None, offset: int = -1) -> list[PromptRow]:
        """Finished prompts in finish order, paged as PromptStore.history (ComfyUI's rules)."""
        return self._rows(self.history_page(max_items, offset))

    def history_page(self, max_items: int | None, offset: int = -1) -> list[str]:
        """The ids of the finished prompts on a page, in finish order: a cheap index read, so
        that the entries can be fetched in pieces (`history_json`)."""
        total = self.q.redis.zcard(self.keys.history)
        if offset < 0:
            offset = max(0, total - max_items) if max_items is not None else 0
        if max_items == 0 or offset >= total:
            return []
        stop = -1 if max_items is None else offset + max_items - 1
        return [text(i) for i in self.q.redis.zrange(self.keys.history, offset, stop)]

    def history_json(self, ids: list[str], budget: int = 4 * 2**20) -> tuple[list[tuple[str, str]], int]:
        """(prompt_id, history entry as JSON) for the first of `ids`, until about `budget`
        characters; and how many ids were used. Entries deleted meanwhile are skipped."""
        out: list[tuple[str, str]] = []
        size = used = 0
        while used < len(ids) and size < budget:
            chunk = ids[used : used + 32]
            used += len(chunk)
            for pid, record in self.q.records(chunk):
                entry = json.dumps(to_row(pid, record).history_entry())
                out.append((pid, entry))
                size += len(entry)
        return out, used

    def queue_json(self) -> bytes:
        """GET /queue's answer as UTF-8 JSON, spliced from the stored texts, never decoded (a
        prompt may have 100,000 nodes), as PromptStore.queue_json."""
        running = [text(i) for i in self.q.redis.smembers(self.keys.running)]
        pending = [text(i) for i in self.q.redis.zrange(self.keys.queued, 0, -1)]
        pipe = self.q.redis.pipeline(transaction=False)
        for pid in running + pending:
            pipe.hmget(self.keys.prompt(pid), ["number", "created", "prompt", "extra_data", "outputs"])
        got = dict(zip(running + pending, pipe.execute(), strict=True))

        def items(ids: list[str]) -> list[tuple[float, float, queue_items.Item]]:
            out = []
            for pid in ids:
                number, created, *texts = got[pid]
                if any(t is None for t in texts):
                    continue  # finished and dropped between the two reads
                blobs = [t if isinstance(t, bytes) else t.encode() for t in texts]
                n = float(text(number) or 0)
                out.append((n, float(text(created) or 0), queue_items.item_parts(pid, n, *blobs)))
            return out

        running_items = [i for _, _, i in sorted(items(running), key=lambda x: x[:2])]
        return queue_items.join_answer(running_items, [i for _, _, i in items(pending)])

    def entry_json(self, prompt_id: str) -> str | None:
        """One finished prompt's history entry as JSON text; None while pending or unknown."""
        row = self.get(prompt_id)
        return json.dumps(row.history_entry()) if row is not None and row.status in FINISHED else None

    def delete_history(self, prompt_ids: list[str] | None = None) -> int:
        return self.q.delete_history(None if prompt_ids is None else [str(p) for p in prompt_ids])

    _JOB_FIELDS = ("number", "status", "created", "finished", "result", "messages", "error", "extra_data")

    def jobs(
        self,
        statuses: list[str],
        workflow_id: str | None = None,
        sort_by: str = "created_at",
        descending: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """PromptStore.jobs from the shared state: one page of prompts in the given statuses
        and their total count, without the prompt bodies."""
        redis, ids = self.q.redis, []
        if PENDING in statuses:
            ids += redis.zrange(self.keys.queued, 0, -1)
        if RUNNING in statuses:
            ids += list(redis.smembers(self.keys.running))
        if any(s not in (PENDING, RUNNING) for s in statuses):
            ids += redis.zrange(self.keys.history, 0, -1)
        pipe = redis.pipeline(transaction=False)
        for pid in ids:
            pipe.hmget(self.keys.prompt(text(pid)), self._JOB_FIELDS)
        jobs = []
        for pid, values in zip(ids, pipe.execute(), strict=True):
            r = dict(zip(self._JOB_FIELDS, (text(v) for v in values), strict=True))
            if r["status"] not in statuses:
                continue
            job = _job_summary(text(pid), r)
            if workflow_id is None or job["workflow_id"] == workflow_id:
                jobs.append(job)

        def order(job: dict[str, Any]) -> tuple:
            if sort_by == "execution_duration":
                ran = int((job["finished"] or 0) * 1000) - job["started_ms"] if job["started_ms"] else 0
                return (ran if job["finished"] else 0, job["number"])
            return (job["created"], job["number"])

        jobs.sort(key=order, reverse=descending)
        end = None if limit is None else offset + limit
        return jobs[offset:end], len(jobs)

    def recover(self) -> list[str]:
        """Nothing to recover here: a prompt whose worker died is reclaimed by another worker."""
        return []

    def close(self) -> None:
        self.q.redis.close()
