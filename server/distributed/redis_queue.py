"""The queue on Redis Streams: one stream per lane (the prompts that need the same models; see
affinity.py), each with the consumer group `workers`.

- A front end `enqueue`s a prompt: its record, its place in `queued` and its stream entry.
- A worker `claim`s (XREADGROUP, one entry of the lane it prefers) and the record turns running.
- While it runs, the worker's heartbeat `touch`es the entry (XCLAIM JUSTID resets its idle time).
- A worker that stops heart-beating loses the entry to another worker's `reclaim` (XAUTOCLAIM)
  after the visibility timeout; an entry delivered `max_deliveries` times is dead-lettered.
- `finish` stores the result, acknowledges the entry and sends the final events in one atomic
  step, only if the worker still holds the prompt: each prompt is reported exactly once.

All state changes are the Lua scripts of lua.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.distributed import lua
from server.distributed.config import (
    BUS_MAXLEN,
    EVENTS_MAXLEN,
    EVENTS_TTL_S,
    ClusterConfig,
    connect,
    dumps,
    text,
)

HISTORY_CAP = 10_000  # as ComfyUI: the oldest finished prompts beyond it are dropped


def decode_hash(raw: Any) -> dict[str, str]:
    """A record from HGETALL (a dict from redis-py, a flat list from a script)."""
    if isinstance(raw, dict):
        return {text(k): text(v) for k, v in raw.items()}
    items = [text(v) for v in raw]
    return dict(zip(items[0::2], items[1::2], strict=True))


@dataclass
class Claim:
    """A prompt a worker holds: its stream entry and its record."""

    prompt_id: str
    lane: str
    msg: str
    record: dict[str, str]
    dead: bool = False  # delivered max-deliveries times already: to be dead-lettered, not run
    reclaimed: bool = False

    @property
    def origin(self) -> str:
        return self.record.get("origin", "")

    @property
    def client_id(self) -> str | None:
        return self.record.get("client_id") or None

    @property
    def deliveries(self) -> int:
        return int(self.record.get("deliveries") or 1)

    def json(self, name: str, default: Any = None) -> Any:
        raw = self.record.get(name)
        return json.loads(raw) if raw else default


@dataclass
class LaneState:
    lane: str
    meta: dict[str, Any]
    head: str | None  # id of the oldest entry no worker has taken yet

    @property
    def head_ms(self) -> int | None:
        return int(self.head.split("-")[0]) if self.head else None


@dataclass
class Snapshot:
    now: float  # Redis' clock, seconds
    lanes: list[LaneState] = field(default_factory=list)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # live adverts by name


class RedisQueue:
    def __init__(self, cfg: ClusterConfig, client: Any = None) -> None:
        self.cfg = cfg
        self.keys = cfg.keys
        self.prefix = self.keys.base + ":"
        self.redis = client if client is not None else connect(cfg.url)
        self._scripts = {
            name: self.redis.register_script(getattr(lua, name))
            for name in (
                "ENQUEUE",
                "SNAPSHOT",
                "CLAIM",
                "RECLAIM",
                "TOUCH",
                "FINISH",
                "REQUEUE",
                "DELETE_PENDING",
                "DELETE_HISTORY",
                "FLAG_INTERRUPT",
                "PUT_FILE",
            )
        }

    def _run(self, name: str, *args: Any) -> Any:
        return self._scripts[name](keys=[], args=[self.prefix, *args])

    # --- front end ---------------------------------------------------------------------------

    def enqueue(
        self,
        prompt_id: str,
        fields: dict[str, str],
        lane: str,
        lane_meta: dict[str, Any],
        number: float | None = None,
        front: bool = False,
    ) -> float | None:
        """Queue a prompt; its number, or None when the id is taken."""
        flat = [x for kv in fields.items() for x in kv]
        got = self._run(
            "ENQUEUE",
            prompt_id,
            "" if number is None else repr(float(number)),
            "1" if front else "0",
            lane,
            dumps(lane_meta),
            *flat,
        )
        return None if got is None else float(got)

    def delete_pending(self, prompt_ids: list[str] | None) -> int:
        return int(self._run("DELETE_PENDING", "1" if prompt_ids is None else "0", *(prompt_ids or [])))

    def delete_history(self, prompt_ids: list[str] | None) -> int:
        return int(self._run("DELETE_HISTORY", "1" if prompt_ids is None else "0", *(prompt_ids or [])))

    def flag_interrupt(self, prompt_id: str) -> str | None:
        """Mark a running prompt as interrupted; the worker running it (None when not running)."""
        return text(self._run("FLAG_INTERRUPT", prompt_id))

    def send_control(self, to: str, action: str, **fields: str) -> None:
        """A request for one worker (`to` its name) or for all (`to` "*")."""
        self.redis.xadd(self.keys.control, {"to": to, "action": action, **fields}, maxlen=1000)
        self.ring("control")

    def ring(self, what: str) -> None:
        self.redis.xadd(self.keys.doorbell, {"r": what}, maxlen=100)

    # --- workers -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now, lanes, workers = self._run("SNAPSHOT")
        snap = Snapshot(now=float(now))
        for lane, meta, head in lanes:
            snap.lanes.append(LaneState(text(lane), json.loads(meta), text(head)))
        for name, advert in workers:
            if advert is not None:
                snap.workers[text(name)] = json.loads(advert)
        return snap

    def claim(self, worker: str, lanes: list[str]) -> Claim | None:
        if not lanes:
            return None
        got = self._run("CLAIM", worker, *lanes)
        if got is None:
            return None
        lane, msg, pid, record = got
        return Claim(text(pid), text(lane), text(msg), decode_hash(record))

    def reclaim(self, worker: str, lanes: list[str], dead_only: bool = False) -> Claim | None:
        """Take over a prompt whose worker stopped heart-beating (or, with `dead_only`, one that
        has used up its deliveries)."""
        if not lanes:
            return None
        idle_ms = int(self.cfg.visibility_timeout * 1000)
        got = self._run(
            "RECLAIM", worker, idle_ms, self.cfg.max_deliveries, "1" if dead_only else "0", *lanes
        )
        if got is None:
            return None
        kind, lane, msg, pid, record = got
        return Claim(
            text(pid), text(lane), text(msg), decode_hash(record), dead=text(kind) == "dead", reclaimed=True
        )

    def lane_ids(self) -> list[str]:
        return [text(k) for k in self.redis.hkeys(self.keys.lanes)]

    def touch(self, worker: str, claim: Claim, node: str | None, value: int, total: int) -> int:
        """Heartbeat of a running prompt: -1 lost to another worker, 1 interrupt asked, 0 fine."""
        return int(
            self._run("TOUCH", worker, claim.prompt_id, claim.lane, claim.msg, node or "", value, total)
        )

    def finish(
        self,
        worker: str,
        claim: Claim,
        status: str,
        result: dict[str, Any],
        messages: list,
        error: dict[str, Any] | None,
        final_events: list[tuple[str, dict[str, Any]]],
        dead: bool = False,
        before: Callable[[Any], None] | None = None,
    ) -> bool:
        """Store the result, acknowledge, and send the final events; False when another worker
        holds the prompt now or it was finished already (nothing is sent then). `before(pipe)`
        adds writes that go first in the same round trip (the prompt's last events)."""
        flat: list[str] = []
        for event, data in final_events:
            flat += [claim.client_id or "", event, dumps(data)]
        pipe = self.redis.pipeline(transaction=True)
        if before is not None:
            before(pipe)
        args = [
            self.prefix,
            worker,
            claim.prompt_id,
            claim.lane,
            claim.msg,
            status,
            dumps(result),
            dumps(messages),
            dumps(error) if error else "",
            HISTORY_CAP,
            claim.origin,
            EVENTS_MAXLEN,
            EVENTS_TTL_S * 1000,
            "1" if dead else "",
            len(final_events),
            *flat,
        ]
        self._scripts["FINISH"](keys=[], args=args, client=pipe)
        return bool(pipe.execute()[-1])

    def requeue(self, worker: str, claim: Claim, front_lane: str, front_meta: dict[str, Any]) -> bool:
        return bool(
            self._run(
                "REQUEUE", worker, claim.prompt_id, claim.lane, claim.msg, front_lane, dumps(front_meta)
            )
        )

    def add_event(
        self, pipe: Any, origin: str, client_id: str | None, event: str, data: dict[str, Any]
    ) -> None:
        """An event of a running prompt, on its front end's stream (in a pipeline)."""
        fields = {"c": client_id or "", "e": event, "d": dumps(data)}
        pipe.xadd(self.keys.events(origin), fields, maxlen=EVENTS_MAXLEN)

    def put_file(self, name: str, digest: str, data: bytes) -> bool:
        return bool(self._run("PUT_FILE", name, digest, data, int(self.cfg.file_ttl * 1000)))

    # --- reading -----------------------------------------------------------------------------

    def record(self, prompt_id: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(self.keys.prompt(prompt_id))
        return decode_hash(raw) if raw else None

    def records(self, prompt_ids: list[str]) -> list[tuple[str, dict[str, str]]]:
        """(id, record) for each id that still has a record, in the given order."""
        pipe = self.redis.pipeline(transaction=False)
        for pid in prompt_ids:
            pipe.hgetall(self.keys.prompt(pid))
        return [(pid, decode_hash(raw)) for pid, raw in zip(prompt_ids, pipe.execute(), strict=True) if raw]

    def last_id(self, stream: str) -> str:
        """The id of a stream's newest entry ("0-0" when empty): where a reader starts."""
        got = self.redis.xrevrange(stream, count=1)
        return text(got[0][0]) if got else "0-0"

    def bus_notice(self, what: str) -> None:
        self.redis.xadd(self.keys.bus, {"q": what}, maxlen=BUS_MAXLEN)
