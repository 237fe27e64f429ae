"""`fluxloom worker --queue redis://…`: claims prompts from the shared queue and runs them with
the same runtime as the embedded server (server/runtime.py: executor, output cache, model
manager), reporting events to the front end each prompt came from.

Threads: the main loop (claim, run, finish), the heartbeat (advertisement, the running prompt's
heartbeat, dead-lettering), the control listener (interrupt, free) and the event publisher.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from server import events
from server.distributed.affinity import can_run, lane_for, plan_claim, worker_catalog
from server.distributed.config import (
    ClusterConfig,
    QueueUnavailable,
    cluster_config,
    connection_errors,
    dumps,
    retrying,
    text,
)
from server.distributed.janitor import dead_letter
from server.distributed.outputs import OutputShipper, download_inputs
from server.distributed.redis_queue import Claim, RedisQueue
from server.distributed.relay import (
    FINAL_EVENTS,
    ControlListener,
    EventPublisher,
    preview_writer,
    write_items,
)
from server.executor import ExecutionResult
from server.prepare import from_record
from server.previews import PreviewRenderer
from server.runtime import Runtime
from server.store import ERROR, INTERRUPTED, SUCCESS
from server.validation import ValidationError

log = logging.getLogger("fluxloom.worker")

CATALOG_EVERY_S = 30.0  # how often the models folders are listed again
MAX_WAIT_S = 2.0  # the longest a worker sleeps without looking at the queue


class RemoteWorker:
    def __init__(
        self,
        cfg: ClusterConfig,
        runtime: Runtime,
        name: str,
        q: RedisQueue | None = None,
        previews: PreviewRenderer | None = None,
    ) -> None:
        self.cfg, self.runtime, self.name = cfg, runtime, name
        self.q = q or RedisQueue(cfg)
        self.previews = previews  # live previews, sent beside the events (relay.preview_writer)
        self.publisher = EventPublisher(self.q)
        self.control = ControlListener(self.q, name, self._on_request)
        self.current: Claim | None = None
        self.prompts_run = 0
        self.started = time.time()
        self._lost = False  # the running prompt was taken over by another worker
        self._interrupt_asked = False
        self._free = {"unload_models": False, "free_memory": False}
        self._stopping = threading.Event()
        self._catalog: dict[str, list[str]] = {}
        self._catalog_at = 0.0
        self._last_event: Any = None
        self._model_loads: dict[str, int] = {}
        self._recheck: float | None = None
        self._next_reclaim = 0.0
        self._lane_meta: dict[str, dict[str, Any]] = {}  # lane -> meta, from the last snapshot
        self._stats: dict[str, Any] = {}  # the model manager's, at the last advertisement
        self._loaded_models: set[str] = set()
        self._busy_models: list[str] = []
        self._held: list[tuple[str, dict[str, Any]]] = []  # final events, sent with the result
        self._heart = threading.Thread(target=self._heartbeat_loop, name="fluxloom-heartbeat", daemon=True)

    # --- life ------------------------------------------------------------------------------

    def run(self) -> None:
        """Work until stop() (SIGTERM / SIGINT): the running prompt then goes back to the queue."""
        self._refresh_catalog()
        retrying(lambda: self.advertise(), what="advertising", stop=self._stopping.is_set, log=log)
        self.control.start()
        self._heart.start()
        bell = retrying(lambda: self.q.last_id(self.q.keys.doorbell), what="starting", log=log)
        log.info("worker %s: waiting for prompts on %s", self.name, self.cfg.redacted_url())
        while not self._stopping.is_set():
            try:
                self._do_free()
                claim = self._next()
                if claim is None:
                    bell = self._wait(bell)
                    continue
                self._run(claim)
            except connection_errors() as exc:
                log.warning("Redis unreachable (%s); retrying", exc)
                self._stopping.wait(0.5)
        self.control.stop()
        self._heart.join(5)
        self.publisher.close()
        try:
            self.q.redis.delete(self.q.keys.worker(self.name), self.q.keys.catalog(self.name))
            self.q.redis.srem(self.q.keys.workers, self.name)
            self.q.ring("worker-left")
        except connection_errors():
            pass
        log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        self._stopping.set()
        self.runtime.executor.interrupt()

    # --- finding work ----------------------------------------------------------------------

    def _next(self) -> Claim | None:
        snap = self.q.snapshot()
        self._lane_meta = {lane.lane: lane.meta for lane in snap.lanes}
        mine = [lane.lane for lane in snap.lanes if can_run(self._catalog, lane.meta["requires"])]
        # Taking over from a dead worker waits for the visibility timeout anyway: look once a beat.
        claim = None
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.cfg.beat
            claim = self.q.reclaim(self.name, mine)
        if claim is not None:
            log.warning(
                "worker %s: took over prompt %s from %s (delivery %d)",
                self.name,
                claim.prompt_id,
                claim.record.get("previous_worker"),
                claim.deliveries,
            )
            return claim
        order, self._recheck = plan_claim(
            self.name, self._catalog, self._loaded(), snap, self.cfg.affinity_wait
        )
        return self.q.claim(self.name, order)

    def _wait(self, bell: str) -> str:
        """Sleep until the doorbell rings (work queued, a worker's state changed) or a deferred
        lane becomes ours."""
        timeout = min(self.cfg.beat, MAX_WAIT_S, self._recheck if self._recheck is not None else MAX_WAIT_S)
        got = self.q.redis.xread({self.q.keys.doorbell: bell}, block=max(1, int(timeout * 1000)), count=100)
        for _, entries in got or []:
            bell = text(entries[-1][0])
        return bell

    # --- running a prompt ------------------------------------------------------------------

    def _run(self, claim: Claim) -> None:
        if claim.dead:
            retrying(lambda: dead_letter(self.q, self.name, claim), what="dead-lettering", log=log)
            return
        self.current, self._lost = claim, False
        self._interrupt_asked = claim.record.get("interrupt") == "1"
        meta = self._lane_meta.get(claim.lane)
        self._busy_models = sorted(meta["models"]) if meta else _models_of(self.q, claim)
        # Busy, and with which models, so that others route around it; sent beside the events.
        self.publisher.call(self._advert_writer(ring=True))
        try:
            result, shipper = self._execute(claim)
            self._report(claim, result, shipper)
        finally:
            self.current = None
            self.prompts_run += 1
            self._read_models()  # at once: the next claim ranks lanes by it
            self.publisher.call(self._advert_writer(ring=True))

    def _execute(self, claim: Claim) -> tuple[ExecutionResult, OutputShipper]:
        executor = self.runtime.executor
        shipper = OutputShipper(self.q, self.runtime.env, self.cfg.max_output_bytes)
        self._held = []

        def listener(event: str, data: dict[str, Any]) -> None:
            if event == "execution_start" and (
                self._stopping.is_set() or self._interrupt_asked or self._lost
            ):
                executor.interrupt()
            if event in FINAL_EVENTS or (event == "executing" and data.get("node") is None):
                self._held.append((event, data))  # sent with the stored result
                return
            if event == "executed":
                data = {**data, "output": shipper.ship(data["node"], data["output"])}
            elif event == "executing":
                self._note_node(claim, data["node"])
            self.publisher.send(claim.origin, claim.client_id, event, data)
            if event == "executing" and claim.deliveries > 1:
                # Its last worker died running it: note each node at once, so that if it kills
                # this worker too, the dead-letter report names the node.
                self.publisher.flush()

        previews = None
        if self.previews is not None:

            def send_preview(metadata: dict[str, Any], jpeg: bytes) -> None:
                self.publisher.call(preview_writer(self.q, claim.origin, claim.client_id, metadata, jpeg))

            previews = self.previews.for_prompt(claim.prompt_id, send_preview)
        if previews is not None:
            listener = previews.wrap(listener)
        try:
            download_inputs(self.q, self.runtime.env, claim.json("inputs", {}))
            plan = claim.json("plan")
            prompt, outputs = claim.json("prompt", {}), claim.json("outputs", [])
            vp = from_record(prompt, outputs, plan) if plan else prompt
            extra = claim.json("extra_data", {})
            result = executor.execute(vp, claim.prompt_id, listener, extra, previews)
        except ValidationError as exc:
            result = _failed(claim.prompt_id, f"prompt no longer valid: {exc}", listener)
        except Exception as exc:  # an engine bug or a lost input file: report it, go on
            log.exception("prompt %s failed to run", claim.prompt_id)
            message = f"internal error: {events.exception_message(exc)}"
            result = _failed(claim.prompt_id, message, listener, events.format_traceback(exc))
        return result, shipper

    def _report(self, claim: Claim, result: ExecutionResult, shipper: OutputShipper) -> None:
        by_user = self._interrupt_asked
        if self._lost:
            log.warning(
                "prompt %s was taken over by another worker; its result here is dropped", claim.prompt_id
            )
            return
        if result.status == INTERRUPTED and self._stopping.is_set() and not by_user:
            front = lane_for(_requires_of(self.q, claim), front=True)
            retrying(
                lambda: self.q.requeue(self.name, claim, front.lane_id, front.meta),
                what="requeueing",
                log=log,
            )
            log.info("prompt %s goes back to the queue (worker stopping)", claim.prompt_id)
            return
        final = list(self._held) or [("executing", events.executing(None, claim.prompt_id))]
        messages = [[event, data] for event, data in result.messages]
        status = result.status if result.status in (SUCCESS, ERROR, INTERRUPTED) else ERROR
        error = result.error
        if shipper.failure is not None and status == SUCCESS:
            status, error = ERROR, _files_error(claim, shipper, result)
            messages = [m for m in messages if m[0] != "execution_success"] + [["execution_error", error]]
            final = [("execution_error", error), ("executing", events.executing(None, claim.prompt_id))]
        outputs = shipper.rename(result.outputs)
        rest = self.publisher.take_rest()  # the last events go with the result, in one round trip
        recorded = retrying(
            lambda: self.q.finish(
                self.name,
                claim,
                status,
                outputs,
                messages,
                error,
                final,
                before=lambda p: write_items(self.q, p, rest),
            ),
            what=f"storing the result of {claim.prompt_id}",
            log=log,
        )
        if not recorded:
            log.warning("prompt %s was finished elsewhere; this result is dropped", claim.prompt_id)

    def _note_node(self, claim: Claim, node: str) -> None:
        """The node now running, on the prompt's record (not only at the next heartbeat)."""
        key, fields = self.q.keys.prompt(claim.prompt_id), {"node": node, "value": 0, "max": 0}
        self.publisher.call(lambda pipe: pipe.hset(key, mapping=fields))

    # --- requests from front ends ----------------------------------------------------------

    def _on_request(self, fields: dict[str, str]) -> None:
        action = fields.get("action")
        if action == "interrupt":
            current = self.current
            if current is not None and current.prompt_id == fields.get("prompt_id"):
                self._interrupt_asked = True
                self.runtime.executor.interrupt()
        elif action == "free":
            self._free["unload_models"] |= fields.get("unload_models") == "1"
            self._free["free_memory"] |= fields.get("free_memory") == "1"

    def _do_free(self) -> None:
        unload, free = self._free["unload_models"], self._free["free_memory"]
        if not (unload or free):
            return
        self._free.update(unload_models=False, free_memory=False)
        if self.runtime.models is not None:
            self.runtime.models.release_all()
        if free:
            self.runtime.executor.cache.clear()
        log.info("freed memory (unload_models=%s, free_memory=%s)", unload, free)
        self._advertise_now()

    # --- heartbeat and advertisement -------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.cfg.beat):
            try:
                self._beat()
            except connection_errors() as exc:
                log.debug("heartbeat: Redis unreachable (%s)", exc)
            except Exception:
                log.exception("heartbeat failed")

    def _beat(self) -> None:
        claim = self.current
        if claim is not None:
            cur = dict(self.runtime.executor.current or {})
            got = self.q.touch(self.name, claim, cur.get("node"), cur.get("value", 0), cur.get("max", 0))
            if got == -1 and self.current is claim:
                self._lost = True
                self.runtime.executor.interrupt()
            elif got == 1 and not self._interrupt_asked:
                self._interrupt_asked = True
                self.runtime.executor.interrupt()
        if time.monotonic() - self._catalog_at > CATALOG_EVERY_S:
            self._refresh_catalog()
        self.advertise()
        if self.current is None:
            while (dead := self.q.reclaim(self.name, self.q.lane_ids(), dead_only=True)) is not None:
                dead_letter(self.q, self.name, dead)

    def _advertise_now(self, models: bool = True) -> None:
        """Advertise a change of state and ring the doorbell, so that idle workers route again."""
        try:
            self.advertise(models=models, ring=True)
        except connection_errors() as exc:
            log.debug("advertising failed (%s)", exc)

    def _refresh_catalog(self) -> None:
        self._catalog = worker_catalog(self.runtime.registry, self.runtime.env)
        self._catalog_at = time.monotonic()

    def _loaded(self) -> set[str]:
        return self._loaded_models

    def _read_models(self) -> None:
        """What the model manager holds now (read after each prompt and at each heartbeat)."""
        self._count_loads()
        models = self.runtime.models
        self._stats = models.stats() if models is not None else {}
        self._loaded_models = {m.get("source") or m["name"] for m in self._stats.get("loaded", [])}

    def _count_loads(self) -> None:
        models = self.runtime.models
        if models is None:
            return
        new = []
        for ev in reversed(models.events):
            if ev is self._last_event:
                break
            new.append(ev)
        if models.events:
            self._last_event = models.events[-1]
        for ev in new:
            if ev.action == "load":
                self._model_loads[ev.name] = self._model_loads.get(ev.name, 0) + 1

    def advertise(self, models: bool = True, ring: bool = False) -> None:
        """What this worker is, holds and does, for routing and /system_stats (expires unless
        renewed: a worker that died disappears within `advert_ttl`). `models`: read the model
        manager again (not needed when only the state changes)."""
        if models:
            self._read_models()
        pipe = self.q.redis.pipeline(transaction=False)
        self._advert_writer(ring)(pipe)
        pipe.execute()

    def _advert_writer(self, ring: bool) -> Any:
        """The advertisement as it is now, as a function that writes it into a pipeline."""
        claim, stats = self.current, self._stats
        advert = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": "busy" if claim is not None else "idle",
            "prompt_id": claim.prompt_id if claim is not None else None,
            "busy_models": self._busy_models if claim is not None else [],
            "loaded": sorted(self._loaded_models),
            "installed": sorted({v for vs in self._catalog.values() for v in vs}),
            "demo_only": bool(stats.get("demo_only")),
            "models": stats,
            "model_loads": dict(self._model_loads),
            "current": dict(self.runtime.executor.current or {}) if claim is not None else {},
            "prompts_run": self.prompts_run,
            "started": self.started,
        }
        text_advert, text_catalog = dumps(advert), dumps(self._catalog)
        ttl, keys, name = int(self.cfg.advert_ttl * 1000), self.q.keys, self.name

        def write(pipe: Any) -> None:
            pipe.set(keys.worker(name), text_advert, px=ttl)
            pipe.set(keys.catalog(name), text_catalog, px=ttl)
            pipe.sadd(keys.workers, name)
            if ring:
                pipe.xadd(keys.doorbell, {"r": "worker-state"}, maxlen=100)

        return write


def _models_of(q: RedisQueue, claim: Claim) -> list[str]:
    return sorted({v for _, v in _requires_of(q, claim)})


def _requires_of(q: RedisQueue, claim: Claim) -> list[list[str]]:
    """The requirements of the lane a prompt came from (kept in the lanes hash)."""
    import json

    raw = q.redis.hget(q.keys.lanes, claim.lane)
    return json.loads(raw)["requires"] if raw else []


def _failed(prompt_id: str, message: str, listener: Any, tb: list[str] | None = None) -> ExecutionResult:
    """A prompt that could not run at all: no node to blame."""
    kind = "ValidationError" if tb is None else "InternalError"
    error = events.execution_error(prompt_id, message, exception_type=kind, traceback=tb)
    listener("execution_error", error)
    listener("executing", events.executing(None, prompt_id))
    return ExecutionResult(
        prompt_id=prompt_id, status=ERROR, error=error, messages=[("execution_error", error)]
    )


def _files_error(claim: Claim, shipper: OutputShipper, result: ExecutionResult) -> dict[str, Any]:
    node = shipper.failed_node
    info = claim.json("prompt", {}).get(node, {}) if node else {}
    return events.execution_error(
        claim.prompt_id,
        str(shipper.failure),
        exception_type="OutputTooLarge",
        node_id=node,
        node_type=info.get("class_type"),
        node_title=(info.get("_meta") or {}).get("title", info.get("class_type")),
        executed_nodes=result.executed,
    )


# --- `fluxloom worker` --------------------------------------------------------------------------


def worker_main(args: argparse.Namespace) -> int:
    from server.app import load_registry
    from server.runtime import config_from_args, create_runtime

    try:
        cfg = cluster_config(args)
        loaded = load_registry("fluxloom worker")
        if isinstance(loaded, int):
            return loaded
        registry, _ = loaded
        q = RedisQueue(cfg)
        q.redis.ping()
    except (QueueUnavailable, ValueError) as exc:
        print(f"fluxloom worker: {exc}", file=sys.stderr)
        return 2
    except connection_errors() as exc:
        print(f"fluxloom worker: cannot reach the queue at {cfg.redacted_url()}: {exc}", file=sys.stderr)
        return 1
    data = Path(args.data_dir)
    config = config_from_args(
        args, output_dir=data / "output", input_dir=data / "input", temp_dir=data / "temp"
    )
    runtime = create_runtime(config, registry)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    previews = PreviewRenderer(getattr(args, "preview_method", "auto"))
    worker = RemoteWorker(cfg, runtime, name, q, previews)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("worker %s: stopping (signal %d)", name, signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"fluxloom worker {name}: connected to {cfg.redacted_url()}", flush=True)
    worker.run()
    previews.close()
    return 0
