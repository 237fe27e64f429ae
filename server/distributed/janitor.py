"""Dead-lettering: a prompt delivered `max_deliveries` times whose worker stopped each time
(it may crash its worker: a poison prompt) is finished as failed, with the reason, and listed on
the `dead` stream. Workers do it when they reclaim such a prompt; front ends run a janitor that
does it too, so it happens even when every worker has been killed by it. The janitor also drops
workers whose advertisement expired from the list of workers."""

from __future__ import annotations

import logging
import threading
from typing import Any

from server import events
from server.distributed.config import connection_errors, text
from server.distributed.redis_queue import Claim, RedisQueue
from server.store import ERROR

log = logging.getLogger("fluxloom.distributed")


def dead_letter_reason(claim: Claim, max_deliveries: int) -> str:
    deliveries = claim.deliveries
    where = ""
    node = claim.record.get("node")
    if node:
        info = claim.json("prompt", {}).get(node, {})
        where = f", while it ran node {node} ({info.get('class_type', '?')})"
    last = claim.record.get("previous_worker") or claim.record.get("worker") or "?"
    return (
        f"dead-lettered after {deliveries} deliveries: each time, the worker running it stopped before "
        f"it finished (last: worker {last}{where}). It may crash the worker (see the workers' logs); "
        f"queue it again once that is fixed (--max-deliveries sets the number of tries)"
    )


def dead_letter(q: RedisQueue, me: str, claim: Claim) -> bool:
    """Finish a prompt that used up its deliveries as failed; True if this call recorded it."""
    message = dead_letter_reason(claim, q.cfg.max_deliveries)
    node = claim.record.get("node") or None
    info: dict[str, Any] = claim.json("prompt", {}).get(node, {}) if node else {}
    error = events.execution_error(
        claim.prompt_id,
        message,
        exception_type="DeadLettered",
        node_id=node,
        node_type=info.get("class_type"),
        node_title=(info.get("_meta") or {}).get("title", info.get("class_type")),
    )
    final = [("execution_error", error), ("executing", events.executing(None, claim.prompt_id))]
    done = q.finish(me, claim, ERROR, {}, [["execution_error", error]], error, final, dead=True)
    if done:
        log.error("prompt %s %s", claim.prompt_id, message)
    return done


class Janitor:
    """A front end's thread: dead-letters prompts that used up their deliveries."""

    def __init__(self, q: RedisQueue, me: str) -> None:
        self.q, self.me = q, me
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fluxloom-janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sweep(self) -> int:
        done = 0
        while (claim := self.q.reclaim(self.me, self.q.lane_ids(), dead_only=True)) is not None:
            done += dead_letter(self.q, self.me, claim)
        for name in self.q.redis.smembers(self.q.keys.workers):
            if not self.q.redis.exists(self.q.keys.worker(text(name))):
                self.q.redis.srem(self.q.keys.workers, name)
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.q.cfg.beat):
            try:
                self.sweep()
            except connection_errors() as exc:
                log.debug("janitor: Redis unreachable (%s)", exc)
            except Exception:
                log.exception("janitor sweep failed")
