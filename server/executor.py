"""Runs a validated prompt: only what the output nodes need, in topological order, reusing
cached outputs, reporting events, honouring interruption, and turning a node's exception into an
error that names the node.

Events go to a listener as `(event, data)` pairs whose names and fields are ComfyUI's websocket
messages (built by server/events.py), so the server forwards them as they are.

Every loop over the prompt's nodes is linear and checks for interruption, so that a prompt of a
hundred thousand nodes (cached or not) stops promptly when asked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nodes.base import Combo, Interrupted, NodeContext, NodeDef, NodeEnv, NodeRegistry, NodeResult
from server import events
from server.cache import CacheEntry, OutputCache, signature
from server.validation import ValidatedPrompt, apply_prompt_hooks, validate_prompt

log = logging.getLogger("fluxloom.executor")

Listener = Callable[[str, dict[str, Any]], None]
# (node, value, total, preview): a node's preview at a progress step (server/previews.py).
PreviewSink = Callable[[str, int, int, Any], None]
# Signature prefix of nodes that can never be answered from the cache (see signatures()).
VOLATILE = "volatile:"
# In a validated prompt every list-valued input is a link `[source_id, slot]`, so the hot paths
# below test `type(value) is list` instead of re-checking the link's shape.


@dataclass(frozen=True)
class ValueLimits:
    """How large a value a node may output: a graph of doubling text nodes must not turn a small
    request into gigabytes (a node that does is stopped with an error naming it)."""

    max_string_chars: int = 16 * 2**20
    max_list_items: int = 1_000_000


@dataclass
class ExecutionResult:
    prompt_id: str
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id → UI output
    executed: list[str] = field(default_factory=list)  # nodes that ran
    cached: list[str] = field(default_factory=list)  # nodes answered from the cache
    error: dict[str, Any] | None = None  # the execution_error payload
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _no_listener(event: str, data: dict[str, Any]) -> None:
    pass


class Executor:
    def __init__(
        self,
        registry: NodeRegistry,
        env: NodeEnv | None = None,
        cache: OutputCache | None = None,
        limits: ValueLimits | None = None,
    ) -> None:
        self.registry = registry
        self.env = env or NodeEnv()
        self.cache = cache if cache is not None else OutputCache()
        self.limits = limits or ValueLimits()
        self._interrupted = False
        self.current: dict[str, Any] = {}  # prompt_id, node, value, max of the running prompt
        # Identical raw prompts (re-runs of one file, batch scripts) reuse their validation and
        # signatures when those depend on the prompt alone; see _prepare.
        self._prepared: OrderedDict[str, tuple[ValidatedPrompt, dict[str, str]]] = OrderedDict()
        self._static_types: dict[str, bool] = {}

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        """Stop the running prompt at the next node boundary, progress report or loop turn."""
        self._interrupted = True

    # --- signatures -----------------------------------------------------------------------------

    def signatures(self, vp: ValidatedPrompt, check: Callable[[], None] = lambda: None) -> dict[str, str]:
        """Each needed node's cache key; `check` runs once per node (to stop on an interrupt)."""
        sigs: dict[str, str] = {}
        for nid in vp.order:
            check()
            node = vp.prompt[nid]
            d = self.registry.get(node["class_type"])
            constants, upstream = {}, {}
            volatile = False
            for name, value in node["inputs"].items():
                if type(value) is list:
                    upstream[name] = (sigs[value[0]], value[1])
                    volatile = volatile or sigs[value[0]].startswith(VOLATILE)
                else:
                    constants[name] = value
            if d.fingerprint and any(i.is_widget and i.name in upstream for i in d.inputs):
                # A widget fed by a link (e.g. a file name from a Text node): its value, and so
                # the file to fingerprint, is only known once the source has run. Never cached.
                volatile = True
            if volatile:
                sigs[nid] = f"{VOLATILE}{uuid.uuid4().hex}"
                continue
            try:
                fp = d.fingerprint(self.env, **constants) if d.fingerprint else ""
            except Exception as exc:
                raise _FingerprintFailed(nid, exc) from exc
            sigs[nid] = signature(d.class_type, constants, upstream, fp)
        return sigs

    # --- preparing a raw prompt -------------------------------------------------------------------

    def _is_static(self, class_type: str) -> bool:
        """A node type whose validation and signature depend on its inputs alone: no file
        fingerprint and no choices read from disk."""
        static = self._static_types.get(class_type)
        if static is None:
            d = self.registry.get(class_type)
            static = d.fingerprint is None and not any(
                isinstance(i.spec, Combo) and callable(i.spec.choices) for i in d.inputs
            )
            self._static_types[class_type] = static
        return static

    def _prepare(self, prompt: dict[str, Any]) -> tuple[ValidatedPrompt, dict[str, str] | None]:
        """Validate (and, for static prompts, sign) a raw prompt, reusing the work done for an
        identical one. The memo key is the prompt *after* the prompt hooks, so a hook that reads
        the machine's state (e.g. which models are installed) changes the key when it matters;
        and only prompts whose node types are all static are kept, so validation that reads
        the disk (model/image choices, file fingerprints) is never reused. The server prepares
        prompts once when they are queued (server/prepare.py) and hands over ValidatedPrompts."""
        prompt, warnings = apply_prompt_hooks(prompt, self.env)
        try:
            key = json.dumps(prompt, sort_keys=True)
        except (TypeError, ValueError):
            key = None
        if key is not None and key in self._prepared:
            self._prepared.move_to_end(key)
            vp, sigs = self._prepared[key]
            return (replace(vp, warnings=warnings) if warnings else vp), sigs
        vp = validate_prompt(prompt, self.registry, self.env, hooks_applied=True)
        vp.warnings = warnings
        if key is None or not all(self._is_static(n["class_type"]) for n in vp.prompt.values()):
            return vp, None
        sigs = self.signatures(vp)
        self._prepared[key] = (replace(vp, warnings=[]), sigs)
        if len(self._prepared) > 64:
            self._prepared.popitem(last=False)
        return vp, sigs

    # --- running ----------------------------------------------------------------------------------

    def execute(
        self,
        prompt: dict[str, Any] | ValidatedPrompt,
        prompt_id: str = "",
        listener: Listener | None = None,
        extra_data: dict[str, Any] | None = None,
        on_preview: PreviewSink | None = None,
    ) -> ExecutionResult:
        """Run a prompt to completion. A raw prompt is validated first, and its validation errors
        raise `server.validation.ValidationError`; every other failure comes back as an
        ExecutionResult with status error/interrupted. `on_preview` gets what nodes hand to
        `ctx.progress` as a preview (right after that step's `progress` event); without it
        previews are ignored."""
        if isinstance(prompt, ValidatedPrompt):
            vp, sigs = prompt, None
        else:
            vp, sigs = self._prepare(prompt)
        self._interrupted = False
        self.current = {"prompt_id": prompt_id, "node": None, "value": 0, "max": 0}
        try:
            run = _Run(self, vp, prompt_id, listener or _no_listener, extra_data or {}, on_preview)
            return run.run(sigs)
        finally:
            self.current = {}
            self._interrupted = False

    def release_models(self) -> str:
        """After running out of memory: drop every model, and say what happened."""
        if self.env.models is None:
            return "Lower the resolution or batch size, or use a quantized model."
        try:
            self.env.models.release_all()
            return "All models were released from memory; queue the prompt again."
        except Exception as exc:  # never hide the original error behind this one
            return f"Releasing models failed too: {events.exception_message(exc)}"


class _Run:
    """One prompt's run: its result, the values computed so far, and the steps (cache lookup,
    each node, the end) as methods."""

    def __init__(
        self,
        executor: Executor,
        vp: ValidatedPrompt,
        prompt_id: str,
        listener: Listener,
        extra_data: dict[str, Any],
        on_preview: PreviewSink | None = None,
    ) -> None:
        self.ex = executor
        self.vp = vp
        self.prompt_id = prompt_id
        self.listener = listener
        self.on_preview = on_preview
        self.extra_pnginfo = extra_data.get("extra_pnginfo") or {}
        self.result = ExecutionResult(prompt_id=prompt_id, status="success")
        self.values: dict[str, tuple] = {}
        self.started = time.perf_counter()

    def emit(self, event: str, data: dict[str, Any], record: bool = False) -> None:
        if record:
            self.result.messages.append((event, data))
        self.listener(event, data)

    def run(self, sigs: dict[str, str] | None) -> ExecutionResult:
        self.emit("execution_start", events.execution_start(self.prompt_id), record=True)
        for warning in self.vp.warnings:
            log.warning("%s", warning)
            self.emit("execution_warning", events.execution_warning(self.prompt_id, warning), record=True)
        try:
            sigs = sigs or self.ex.signatures(self.vp, self.check_interrupt)
            to_run = self.answer_from_cache(sigs)
            for nid in self.vp.order:
                if nid in to_run:
                    self.run_node(nid, sigs[nid])
        except Interrupted:
            return self.interrupted(self.ex.current.get("node"))
        except _FingerprintFailed as failed:  # e.g. an input file vanished: name the node
            return self.failed(failed.node_id, failed.cause, {})
        except _NodeFailed as failed:
            return self.failed(failed.node_id, failed.cause, failed.inputs)
        self.result.seconds = time.perf_counter() - self.started
        self.emit("execution_success", events.execution_success(self.prompt_id), record=True)
        self.emit("executing", events.executing(None, self.prompt_id))
        return self.result

    def answer_from_cache(self, sigs: dict[str, str]) -> set[str]:
        """Take every cached output now (so that an eviction mid-run cannot take it away), send
        the cached output nodes' UI outputs, and return the nodes still to run. (The loops read
        the interrupt flag directly: they run for every node of every prompt.)"""
        ex, vp, values = self.ex, self.vp, self.values
        get = ex.cache.get
        hits: dict[str, CacheEntry] = {}
        for nid in vp.order:
            if ex._interrupted:
                raise Interrupted("interrupted")
            entry = get(sigs[nid])
            if entry is not None:
                hits[nid] = entry
                values[nid] = entry.outputs
        cached = self.result.cached = [nid for nid in vp.order if nid in hits]
        self.emit("execution_cached", events.execution_cached(cached, self.prompt_id), record=True)
        outputs = set(vp.outputs)
        for nid in cached:
            if ex._interrupted:
                raise Interrupted("interrupted")
            ui = hits[nid].ui
            if ui is not None and nid in outputs:
                self.result.outputs[nid] = ui
                self.emit("executed", events.executed(nid, ui, self.prompt_id))
        return self.needed(hits)

    def needed(self, hits: dict[str, CacheEntry]) -> set[str]:
        """Nodes to run: walk back from the outputs, stopping at cached nodes."""
        prompt = self.vp.prompt
        needed: set[str] = set()
        stack = [o for o in self.vp.outputs if o not in hits]
        while stack:
            nid = stack.pop()
            if nid in needed:
                continue
            needed.add(nid)
            for value in prompt[nid]["inputs"].values():
                if type(value) is list and value[0] not in hits:
                    stack.append(value[0])
        return needed

    def check_interrupt(self) -> None:
        if self.ex.interrupted:
            raise Interrupted("interrupted")

    def run_node(self, nid: str, sig: str) -> None:
        node = self.vp.prompt[nid]
        d = self.ex.registry.get(node["class_type"])
        values = self.values
        kwargs = {
            name: values[value[0]][value[1]] if type(value) is list else value
            for name, value in node["inputs"].items()
        }
        title = node["_meta"].get("title", d.class_type)
        self.ex.current.update(node=nid, class_type=d.class_type, title=title, value=0, max=0)
        self.check_interrupt()
        self.emit("executing", events.executing(nid, self.prompt_id))
        ctx = NodeContext(
            env=self.ex.env,
            node_id=nid,
            class_type=d.class_type,
            prompt_id=self.prompt_id,
            prompt=self.vp.prompt,
            extra_pnginfo=self.extra_pnginfo,
            on_progress=self.progress_reporter(nid),
            is_interrupted=lambda: self.ex.interrupted,
        )
        try:
            out, ui = _outputs_of(d, d.run(ctx, **kwargs), self.ex.limits)
        except Interrupted:
            raise
        except Exception as exc:
            raise _NodeFailed(nid, exc, kwargs) from exc
        values[nid] = out
        if not sig.startswith(VOLATILE):
            self.ex.cache.put(sig, out, ui)
        self.result.executed.append(nid)
        if ui is not None:
            self.result.outputs[nid] = ui
            self.emit("executed", events.executed(nid, ui, self.prompt_id))

    def progress_reporter(self, nid: str) -> Callable[[int, int, Any], None]:
        current, emit, prompt_id, on_preview = self.ex.current, self.emit, self.prompt_id, self.on_preview

        def report(value: int, total: int, preview: Any = None) -> None:
            current.update(value=value, max=total)
            emit("progress", events.progress(value, total, nid, prompt_id))
            if preview is not None and on_preview is not None:
                on_preview(nid, value, total, preview)

        return report

    def interrupted(self, nid: str | None) -> ExecutionResult:
        result = self.result
        result.status = "interrupted"
        result.seconds = time.perf_counter() - self.started
        node_type = self.vp.prompt[nid]["class_type"] if nid else None
        self.emit(
            "execution_interrupted",
            events.execution_interrupted(self.prompt_id, nid, node_type, result.executed),
            record=True,
        )
        self.emit("executing", events.executing(None, self.prompt_id))
        return result

    def failed(self, nid: str, exc: BaseException, inputs: dict[str, Any]) -> ExecutionResult:
        message = events.exception_message(exc)
        if _is_out_of_memory(exc):
            message = f"Out of memory: {message}. {self.ex.release_models()}"
        node = self.vp.prompt[nid]
        class_type = node["class_type"]
        title = node.get("_meta", {}).get("title", class_type)
        log.error("node %s (%s) failed: %s", nid, class_type, message)
        result = self.result
        result.status = "error"
        result.seconds = time.perf_counter() - self.started
        result.error = events.execution_error(
            self.prompt_id,
            message,
            exception_type=events.exception_type(exc),
            node_id=nid,
            node_type=class_type,
            node_title=title,
            executed_nodes=result.executed,
            traceback=events.format_traceback(exc),
            current_inputs={k: events.describe_value(v) for k, v in inputs.items()},
        )
        self.emit("execution_error", result.error, record=True)
        self.emit("executing", events.executing(None, self.prompt_id))
        return result


def _outputs_of(d: NodeDef, out: Any, limits: ValueLimits) -> tuple[tuple, dict[str, Any] | None]:
    """A run function's return value as (outputs, UI output), checked against the declaration
    and the value limits."""
    ui = None
    if isinstance(out, NodeResult):
        out, ui = tuple(out.outputs), out.ui
    elif out is None:
        out = ()
    elif not isinstance(out, tuple):
        out = (out,)
    if len(out) != len(d.outputs):
        raise TypeError(f"{d.class_type} returned {len(out)} values for {len(d.outputs)} outputs")
    for value, declared in zip(out, d.outputs, strict=True):
        if isinstance(value, str) and len(value) > limits.max_string_chars:
            raise ValueError(
                f"output {declared.label!r} is a text of {len(value):,} characters, over the limit of "
                f"{limits.max_string_chars:,}"
            )
        if isinstance(value, list | tuple) and len(value) > limits.max_list_items:
            raise ValueError(
                f"output {declared.label!r} is a list of {len(value):,} items, over the limit of "
                f"{limits.max_list_items:,}"
            )
    return out, ui


class _FingerprintFailed(Exception):
    """A node's fingerprint raised; carries the node so the error can name it."""

    def __init__(self, node_id: str, cause: Exception) -> None:
        super().__init__(node_id)
        self.node_id, self.cause = node_id, cause


class _NodeFailed(Exception):
    """A node's run function raised (or returned something it may not)."""

    def __init__(self, node_id: str, cause: Exception, inputs: dict[str, Any]) -> None:
        super().__init__(node_id)
        self.node_id, self.cause, self.inputs = node_id, cause, inputs


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    # Only a node that used torch can have run out of its memory: no need to import it here.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)
