"""The one worker thread that executes the queue, so a long sampling run never blocks the event
loop that serves HTTP and the websocket. Events from the executor are handed to `notify`, which
the app bridges to the loop with `call_soon_threadsafe`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from server import events
from server.executor import ExecutionResult
from server.prepare import from_record
from server.previews import PREVIEW_EVENT, PreviewRenderer, PromptPreviews
from server.runtime import Runtime
from server.store import ERROR, INTERRUPTED, SUCCESS, PromptRow, PromptStore
from server.validation import ValidationError

log = logging.getLogger("fluxloom.worker")

Notify = Callable[[str, dict[str, Any], str | None], None]  # (event, data, client_id or None)


class Worker:
    def __init__(
        self,
        store: PromptStore,
        runtime: Runtime,
        notify: Notify,
        queue_changed: Callable[[], None],
        previews: PreviewRenderer | None = None,
        wants_previews: Callable[[str | None], bool] = lambda client_id: True,
    ):
        self.store = store
        self.runtime = runtime
        self.notify = notify
        self.queue_changed = queue_changed
        # Previews go out as PREVIEW_EVENT notifications, only while a client is there to see them.
        self.previews = previews
        self.wants_previews = wants_previews
        self.running: PromptRow | None = None
        self._user_interrupted: str | None = None  # a user's interrupt is final, even at shutdown
        self._free = {"unload_models": False, "free_memory": False}  # done between prompts
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fluxloom-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after interrupting the running prompt, which goes back to the queue's head."""
        self._stopping.set()
        self.runtime.executor.interrupt()
        with self.store.changed:
            self.store.changed.notify_all()
        self._thread.join(timeout)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is `prompt_id`, when given)."""
        row = self.running
        if row is None or (prompt_id and row.prompt_id != prompt_id):
            return False
        self._user_interrupted = row.prompt_id
        self.runtime.executor.interrupt()
        return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Release models / clear the output cache once no prompt is running (as ComfyUI does)."""
        self._free["unload_models"] |= unload_models
        self._free["free_memory"] |= free_memory
        with self.store.changed:
            self.store.changed.notify_all()

    def _do_free(self) -> None:
        unload, free = self._free["unload_models"], self._free["free_memory"]
        self._free.update(unload_models=False, free_memory=False)
        models = self.runtime.models
        if (unload or free) and models is not None:
            models.release_all()
        if free:
            self.runtime.executor.cache.clear()
        if unload or free:
            log.info("freed memory (unload_models=%s, free_memory=%s)", unload, free)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._do_free()
            except Exception:  # a failing release must not stop the queue
                log.exception("freeing memory failed")
            row = self.store.claim_next()
            if row is None:
                self.store.wait_for_work(0.5)
                continue
            self.running = row
            try:
                self._run(row)
            except Exception as exc:  # e.g. a node's UI output that is not JSON: the queue goes on
                log.exception("prompt %s could not be recorded", row.prompt_id)
                self._record_failure(row, exc)
            finally:
                self.running = None
                self.queue_changed()

    def _run(self, row: PromptRow) -> None:
        self.queue_changed()

        held: list[dict[str, Any]] = []

        def listener(event: str, data: dict[str, Any]) -> None:
            # execute() clears the interrupt flag as it starts: an interrupt or a shutdown that
            # came between claiming the prompt and that moment is raised again here.
            if event == "execution_start" and (
                self._stopping.is_set() or self._user_interrupted == row.prompt_id
            ):
                self.runtime.executor.interrupt()
            # ComfyUI clients fetch /history/{id} on `executing` with node null: hold that
            # message back until the history row is written.
            if event == "executing" and data.get("node") is None:
                held.append(data)
            else:
                self.notify(event, data, row.client_id)

        previews = self._previews_of(row)
        if previews is not None:
            listener = previews.wrap(listener)
        # Validated when it was queued (server/prepare.py); a row queued by an older fluxloom
        # (no plan) is validated here.
        prompt = from_record(row.prompt, row.outputs_to_execute, row.plan) if row.plan else row.prompt
        try:
            result = self.runtime.executor.execute(prompt, row.prompt_id, listener, row.extra_data, previews)
        except ValidationError as exc:
            result = self._failed(row, f"prompt no longer valid: {exc}", listener)
        except Exception as exc:  # an engine bug must not kill the worker or lose the prompt
            log.exception("executor failed on prompt %s", row.prompt_id)
            message = f"internal error: {events.exception_message(exc)}"
            result = self._failed(row, message, listener, events.format_traceback(exc))
        by_user = self._user_interrupted == row.prompt_id
        self._user_interrupted = None
        if result.status == INTERRUPTED and self._stopping.is_set() and not by_user:
            self.store.requeue(row.prompt_id)
            log.info("prompt %s goes back to the queue (server stopping)", row.prompt_id)
            return
        messages = [[event, data] for event, data in result.messages]
        status = result.status if result.status in (SUCCESS, ERROR, INTERRUPTED) else ERROR
        self.store.finish(row.prompt_id, status, result.outputs, messages, result.error)
        for data in held or [events.executing(None, row.prompt_id)]:
            self.notify("executing", data, row.client_id)

    def _previews_of(self, row: PromptRow) -> PromptPreviews | None:
        if self.previews is None:
            return None

        def send(metadata: dict[str, Any], jpeg: bytes) -> None:
            self.notify(PREVIEW_EVENT, {"metadata": metadata, "image": jpeg}, row.client_id)

        return self.previews.for_prompt(row.prompt_id, send, lambda: self.wants_previews(row.client_id))

    def _record_failure(self, row: PromptRow, exc: Exception) -> None:
        """Finish a prompt whose result could not be stored, so it never stays `running`."""

        def listener(event: str, data: dict[str, Any]) -> None:
            self.notify(event, data, row.client_id)

        message = f"internal error: {type(exc).__name__}: {events.exception_message(exc)}"
        result = self._failed(row, message, listener, events.format_traceback(exc))
        try:
            messages = [[event, data] for event, data in result.messages]
            self.store.finish(row.prompt_id, ERROR, {}, messages, result.error)
        except Exception:
            log.exception("prompt %s could not be marked as failed", row.prompt_id)

    @staticmethod
    def _failed(
        row: PromptRow, message: str, listener: Callable, tb: list[str] | None = None
    ) -> ExecutionResult:
        """A prompt that could not run at all: no node to blame."""
        kind = "ValidationError" if tb is None else "InternalError"
        error = events.execution_error(row.prompt_id, message, exception_type=kind, traceback=tb)
        listener("execution_error", error)
        listener("executing", events.executing(None, row.prompt_id))
        return ExecutionResult(
            prompt_id=row.prompt_id, status=ERROR, error=error, messages=[("execution_error", error)]
        )
