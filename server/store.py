"""The persistent prompt queue and history: one SQLite table (stdlib sqlite3) in the data dir.

A prompt row moves pending → running → success | error | interrupted. Rows are written before
`POST /prompt` answers, so a crash or a `kill -9` loses nothing: on the next start the pending
rows run, and a row left `running` is reported as failed ("server stopped during execution").

The HTTP handlers (event loop) and the worker thread share one connection behind a lock; every
statement is short, so the loop is never held for long.

History is capped (`max_history`, ComfyUI's 10,000 by default): finishing a prompt drops the
oldest finished ones beyond the cap. `history_page` + `history_json` serve GET /history in
bounded pieces, each entry spliced from its stored JSON texts without decoding the prompt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server import events, jsontext, queue_items

PENDING, RUNNING = "pending", "running"
SUCCESS, ERROR, INTERRUPTED = "success", "error", "interrupted"
FINISHED = (SUCCESS, ERROR, INTERRUPTED)
MAX_HISTORY = 10_000
STOPPED_MESSAGE = "server stopped during execution"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id   TEXT PRIMARY KEY,
    number      REAL NOT NULL,          -- queue order; `front` prompts get a negative number
    status      TEXT NOT NULL,
    prompt      TEXT NOT NULL,          -- API-format prompt, JSON
    extra_data  TEXT NOT NULL,          -- JSON (client_id, extra_pnginfo)
    outputs     TEXT NOT NULL,          -- output node ids to execute, JSON list
    client_id   TEXT,
    result      TEXT,                   -- node id -> UI output, JSON
    messages    TEXT,                   -- recorded websocket messages, JSON
    error       TEXT,                   -- execution_error payload, JSON
    created     REAL NOT NULL,
    finished    REAL,
    seq         INTEGER,                -- history order (finish order)
    plan        TEXT                    -- JSON {order, warnings} of the validated prompt
);
CREATE INDEX IF NOT EXISTS prompts_status ON prompts(status, number);
CREATE INDEX IF NOT EXISTS prompts_seq ON prompts(seq);
"""


class DuplicatePromptId(ValueError):
    """A prompt was queued under a prompt_id already in the queue or the history."""


@dataclass
class PromptRow:
    prompt_id: str
    number: float
    status: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None
    result: dict[str, Any] = field(default_factory=dict)
    messages: list = field(default_factory=list)
    error: dict[str, Any] | None = None
    created: float = 0.0
    finished: float | None = None
    # How the prompt was validated when queued ({order, warnings}); None for rows queued by an
    # older fluxloom, which the worker validates before running.
    plan: dict[str, Any] | None = None

    def queue_item(self) -> list:
        """ComfyUI's queue item: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        number = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    def history_entry(self) -> dict[str, Any]:
        """ComfyUI's history entry for a finished prompt."""
        return {
            "prompt": self.queue_item(),
            "outputs": self.result,
            "status": {
                "status_str": "success" if self.status == SUCCESS else "error",
                "completed": self.status == SUCCESS,
                "messages": self.messages,
            },
            "meta": {
                nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in self.result
            },
        }


def _row(r: sqlite3.Row) -> PromptRow:
    return PromptRow(
        prompt_id=r["prompt_id"],
        number=r["number"],
        status=r["status"],
        prompt=jsontext.loads(r["prompt"]),
        extra_data=json.loads(r["extra_data"]),
        outputs_to_execute=json.loads(r["outputs"]),
        client_id=r["client_id"],
        result=jsontext.loads(r["result"]) if r["result"] else {},
        messages=jsontext.loads(r["messages"]) if r["messages"] else [],
        error=json.loads(r["error"]) if r["error"] else None,
        created=r["created"],
        finished=r["finished"],
        plan=json.loads(r["plan"]) if r["plan"] else None,
    )


def _queue_item_json(r: sqlite3.Row) -> str:
    """`PromptRow.queue_item()` as JSON, spliced from the row's stored JSON texts (written by
    json.dumps), so a large prompt is copied, never decoded and encoded again."""
    return "".join(
        queue_items.item_parts(r["prompt_id"], r["number"], r["prompt"], r["extra_data"], r["outputs"])
    )


def _history_entry_json(r: sqlite3.Row) -> str:
    """`PromptRow.history_entry()` as JSON, spliced as `_queue_item_json`."""
    result = r["result"] or "{}"
    meta = {
        nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
        for nid in jsontext.loads(result)
    }
    ok = r["status"] == SUCCESS
    return (
        f'{{"prompt": {_queue_item_json(r)}, "outputs": {result}, '
        f'"status": {{"status_str": {json.dumps("success" if ok else "error")}, '
        f'"completed": {json.dumps(ok)}, "messages": {r["messages"] or "[]"}}}, '
        f'"meta": {jsontext.dumps(meta)}}}'
    )


class PromptStore:
    """Queue + history in one SQLite file; thread-safe; wakes the worker when work arrives."""

    def __init__(self, path: Path | str, max_history: int = MAX_HISTORY) -> None:
        self.path = Path(path)
        self.max_history = max_history
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        # WAL + synchronous=NORMAL: a committed row survives a process kill (not only a clean exit).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._lock = threading.RLock()
        self._queue_items = queue_items.QueueItems()
        self.changed = threading.Condition(self._lock)
        self._counter = int(self._scalar("SELECT COALESCE(MAX(ABS(number)), 0) FROM prompts")) + 1
        self._seq = int(self._scalar("SELECT COALESCE(MAX(seq), 0) FROM prompts")) + 1
        with self._lock:
            self._trim_history_locked()  # the cap may have been lowered since the last run

    def _migrate(self) -> None:
        """Add the columns a database made by an older fluxloom lacks (its rows keep working)."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(prompts)")}
        if "plan" not in columns:
            self._db.execute("ALTER TABLE prompts ADD COLUMN plan TEXT")

    def _scalar(self, sql: str, *args: Any) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- recovery ---------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Mark prompts left running by a dead process as failed; return their ids."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT prompt_id FROM prompts WHERE status=?", (RUNNING,))]
            for pid in ids:
                error = events.execution_error(pid, STOPPED_MESSAGE, exception_type="ServerStopped")
                texts = ("{}", json.dumps([["execution_error", error]]), json.dumps(error))
                self._finish_locked(pid, ERROR, texts)
            return ids

    # --- queue ------------------------------------------------------------------------------

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
        """Queue a prompt; returns its number (ComfyUI: `front` means a negative number). A
        prompt_id already used raises DuplicatePromptId."""
        # Encoded before taking the lock: a prompt of 100,000 nodes is megabytes of JSON.
        texts = (jsontext.dumps(prompt), json.dumps(extra_data), jsontext.dumps(outputs))
        blobs = tuple(t.encode() for t in texts)  # for GET /queue
        plan_text = json.dumps(plan) if plan is not None else None
        with self._lock:
            if number is None:
                number = self._counter
                self._counter += 1
                if front:
                    number = -number
            try:
                self._db.execute(
                    "INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs, client_id,"
                    " created, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, number, PENDING, *texts, client_id, time.time(), plan_text),
                )
            except sqlite3.IntegrityError:
                raise DuplicatePromptId(f"prompt_id {prompt_id!r} is already used") from None
            self._queue_items.put(prompt_id, queue_items.item_parts(prompt_id, number, *blobs))
            self.changed.notify_all()
            return number

    def exists(self, prompt_id: str) -> bool:
        return self._scalar("SELECT COUNT(*) FROM prompts WHERE prompt_id=?", prompt_id) > 0

    def claim_next(self) -> PromptRow | None:
        """Take the first pending prompt and mark it running."""
        with self._lock:
            r = self._db.execute(
                "SELECT * FROM prompts WHERE status=? ORDER BY number, created LIMIT 1", (PENDING,)
            ).fetchone()
            if r is None:
                return None
            self._db.execute("UPDATE prompts SET status=? WHERE prompt_id=?", (RUNNING, r["prompt_id"]))
        row = _row(r)  # decoded outside the lock: a huge prompt must not hold up the HTTP side
        row.status = RUNNING
        return row

    def requeue(self, prompt_id: str) -> None:
        """Put a running prompt back at the head of the queue (graceful shutdown)."""
        with self._lock:
            self._db.execute(
                "UPDATE prompts SET status=? WHERE prompt_id=? AND status=?", (PENDING, prompt_id, RUNNING)
            )

    def finish(
        self,
        prompt_id: str,
        status: str,
        result: dict[str, Any],
        messages: list,
        error: dict[str, Any] | None = None,
    ) -> None:
        # Encoded before taking the lock: a prompt of 100,000 outputs makes megabytes of JSON.
        texts = (jsontext.dumps(result), jsontext.dumps(messages), json.dumps(error) if error else None)
        with self._lock:
            self._finish_locked(prompt_id, status, texts)
            self.changed.notify_all()

    def _finish_locked(self, prompt_id: str, status: str, texts: tuple[str, str, str | None]) -> None:
        """Store a finished prompt; `texts`: its result, messages and error as JSON."""
        result, messages, error = texts
        self._db.execute(
            "UPDATE prompts SET status=?, result=?, messages=?, error=?, finished=?, seq=? WHERE prompt_id=?",
            (status, result, messages, error, time.time(), self._seq, prompt_id),
        )
        self._seq += 1
        self._queue_items.drop(prompt_id)  # no longer in GET /queue
        self._trim_history_locked()

    def _trim_history_locked(self) -> None:
        """Drop the oldest finished prompts beyond `max_history`. Only finished rows have a
        `seq`, so this reads the seq index alone."""
        r = self._db.execute(
            "SELECT seq FROM prompts WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (max(0, self.max_history),),
        ).fetchone()
        if r is not None:
            marks = ",".join("?" * len(FINISHED))
            self._db.execute(f"DELETE FROM prompts WHERE seq <= ? AND status IN ({marks})", (r[0], *FINISHED))

    def pending(self) -> list[PromptRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM prompts WHERE status=? ORDER BY number, created", (PENDING,)
            ).fetchall()
        return [_row(r) for r in rows]

    def running(self) -> list[PromptRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM prompts WHERE status=?", (RUNNING,)).fetchall()
        return [_row(r) for r in rows]

    def queue_json(self) -> bytes:
        """GET /queue's answer as UTF-8 JSON, from the items kept since the prompts were added
        (server/queue_items.py), or spliced from the stored rows."""
        with self._lock:
            running = [
                r[0] for r in self._db.execute("SELECT prompt_id FROM prompts WHERE status=?", (RUNNING,))
            ]
            pending = [
                r[0]
                for r in self._db.execute(
                    "SELECT prompt_id FROM prompts WHERE status=? ORDER BY number, created", (PENDING,)
                )
            ]
            return self._queue_items.answer(running, pending, self._read_queue_items)

    def _read_queue_items(self, ids: list[str]) -> list[tuple[str, queue_items.Item]]:
        """Items read from the rows: only the columns they need, as bytes (no decoding)."""
        items = []
        for start in range(0, len(ids), 500):  # SQLite's bound on query parameters
            chunk = ids[start : start + 500]
            rows = self._db.execute(
                "SELECT prompt_id, number, CAST(prompt AS BLOB), CAST(extra_data AS BLOB),"
                f" CAST(outputs AS BLOB) FROM prompts WHERE prompt_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            items += [(r[0], queue_items.item_parts(*r)) for r in rows]
        return items

    def entry_json(self, prompt_id: str) -> str | None:
        """One finished prompt's history entry as JSON text; None while pending or unknown."""
        with self._lock:
            r = self._db.execute("SELECT * FROM prompts WHERE prompt_id=?", (prompt_id,)).fetchone()
        return _history_entry_json(r) if r is not None and r["status"] in FINISHED else None

    def remaining(self) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM prompts WHERE status IN (?, ?)", PENDING, RUNNING))

    def position(self, prompt_id: str) -> int | None:
        """0-based place among pending prompts (None when not pending)."""
        with self._lock:
            r = self._db.execute(
                "SELECT number, created FROM prompts WHERE prompt_id=? AND status=?", (prompt_id, PENDING)
            ).fetchone()
            if r is None:
                return None
            return self._db.execute(
                "SELECT COUNT(*) FROM prompts WHERE status=?"
                " AND (number < ? OR (number = ? AND created < ?))",
                (PENDING, r["number"], r["number"], r["created"]),
            ).fetchone()[0]

    def delete_pending(self, prompt_ids: list[str] | None = None) -> int:
        """Remove pending prompts (all when `prompt_ids` is None); running ones stay."""
        with self._lock:
            if prompt_ids is None:
                gone = [
                    r[0] for r in self._db.execute("SELECT prompt_id FROM prompts WHERE status=?", (PENDING,))
                ]
                n = self._db.execute("DELETE FROM prompts WHERE status=?", (PENDING,)).rowcount
            else:
                gone = [
                    pid
                    for pid in map(str, prompt_ids)
                    if self._db.execute(
                        "DELETE FROM prompts WHERE status=? AND prompt_id=?", (PENDING, pid)
                    ).rowcount
                ]
                n = len(gone)
            for pid in gone:
                self._queue_items.drop(pid)  # no longer in GET /queue
            self.changed.notify_all()
            return n

    # --- history ----------------------------------------------------------------------------

    def get(self, prompt_id: str) -> PromptRow | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM prompts WHERE prompt_id=?", (prompt_id,)).fetchone()
        return _row(r) if r is not None else None

    def history(self, max_items: int | None = None, offset: int = -1) -> list[PromptRow]:
        """Finished prompts in finish order. As in ComfyUI, a negative offset with `max_items`
        means the latest `max_items`; offset 0 starts at the oldest."""
        marks = ",".join("?" * len(FINISHED))
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE status IN ({marks})", FINISHED)
            total = total.fetchone()[0]
            if offset < 0:
                offset = max(0, total - max_items) if max_items is not None else 0
            limit = max_items if max_items is not None else -1
            rows = self._db.execute(
                f"SELECT * FROM prompts WHERE status IN ({marks}) ORDER BY seq LIMIT ? OFFSET ?",
                (*FINISHED, limit, offset),
            ).fetchall()
        return [_row(r) for r in rows]

    def history_page(self, max_items: int | None, offset: int = -1) -> list[int]:
        """The `seq` of each finished prompt on a page, in finish order (same paging as
        `history`): a cheap index read, so that the entries can then be fetched in pieces."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM prompts WHERE seq IS NOT NULL").fetchone()[0]
            if offset < 0:
                offset = max(0, total - max_items) if max_items is not None else 0
            limit = max_items if max_items is not None else -1
            rows = self._db.execute(
                "SELECT seq FROM prompts WHERE seq IS NOT NULL ORDER BY seq LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [r[0] for r in rows]

    def history_json(self, seqs: list[int], budget: int = 4 * 2**20) -> tuple[list[tuple[str, str]], int]:
        """(prompt_id, history entry as JSON text) for the first of `seqs`, stopping once about
        `budget` characters are gathered; and how many seqs were used. Entries deleted since
        `history_page` are skipped."""
        out: list[tuple[str, str]] = []
        size = used = 0
        for seq in seqs:
            if size >= budget:
                break
            used += 1
            with self._lock:
                r = self._db.execute("SELECT * FROM prompts WHERE seq=?", (seq,)).fetchone()
            if r is None or r["status"] not in FINISHED:
                continue
            text = _history_entry_json(r)
            out.append((r["prompt_id"], text))
            size += len(text)
        return out, used

    def delete_history(self, prompt_ids: list[str] | None = None) -> int:
        marks = ",".join("?" * len(FINISHED))
        with self._lock:
            if prompt_ids is None:
                return self._db.execute(f"DELETE FROM prompts WHERE status IN ({marks})", FINISHED).rowcount
            return sum(
                self._db.execute(
                    f"DELETE FROM prompts WHERE status IN ({marks}) AND prompt_id=?", (*FINISHED, str(pid))
                ).rowcount
                for pid in prompt_ids
            )

    def wait_for_work(self, timeout: float) -> None:
        """Block the worker until something is queued (or `timeout` passes)."""
        with self._lock:
            if self._scalar("SELECT COUNT(*) FROM prompts WHERE status=?", PENDING) == 0:
                self.changed.wait(timeout)

    # --- jobs (ComfyUI's /api/jobs) -----------------------------------------------------------

    # When a prompt started running: the timestamp (ms) of its recorded execution_start message.
    _STARTED_MS = (
        "(SELECT json_extract(m.value, '$[1].timestamp')"
        " FROM json_each(COALESCE(prompts.messages, '[]')) AS m"
        " WHERE json_extract(m.value, '$[0]') = 'execution_start' LIMIT 1)"
    )
    _JOB_ORDER = {
        "created_at": "created",
        "execution_duration": f"COALESCE(CAST(finished * 1000 AS INTEGER) - {_STARTED_MS}, 0)",
    }

    def jobs(
        self,
        statuses: list[str],
        workflow_id: str | None = None,
        sort_by: str = "created_at",
        descending: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of prompts in the given store statuses and their total count, without the
        prompt bodies (a list of jobs stays small): prompt_id, number, status, created, finished,
        started_ms, workflow_id, result, messages, error."""
        marks = ",".join("?" * len(statuses))
        where = f"status IN ({marks})"
        args: list[Any] = list(statuses)
        if workflow_id is not None:
            where += " AND json_extract(extra_data, '$.extra_pnginfo.workflow.id') = ?"
            args.append(workflow_id)
        direction = "DESC" if descending else "ASC"
        order = f"{self._JOB_ORDER[sort_by]} {direction}, number {direction}"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE {where}", args).fetchone()[0]
            rows = self._db.execute(
                "SELECT prompt_id, number, status, created, finished, result, messages, error,"
                f" {self._STARTED_MS} AS started_ms,"
                " json_extract(extra_data, '$.extra_pnginfo.workflow.id') AS workflow_id"
                f" FROM prompts WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                (*args, -1 if limit is None else limit, offset),
            ).fetchall()
        return [_job_summary(r) for r in rows], total


def _job_summary(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "prompt_id": r["prompt_id"],
        "number": r["number"],
        "status": r["status"],
        "created": r["created"],
        "finished": r["finished"],
        "started_ms": r["started_ms"],
        "workflow_id": r["workflow_id"],
        "result": jsontext.loads(r["result"]) if r["result"] else {},
        "messages": jsontext.loads(r["messages"]) if r["messages"] else [],
        "error": json.loads(r["error"]) if r["error"] else None,
    }
