"""Runs a validated prompt: only what the output nodes need, in topological order, reusing
cached outputs, reporting events, honouring interruption, and turning a node's exception into an
error that names the node.

Events go to a listener as `(event, data)` pairs whose names and fields are ComfyUI's websocket
messages (`execution_start`, `execution_cached`, `executing`, `progress`, `executed`,
`execution_success`, `execution_error`, `execution_interrupted`), so the server forwards them
as they are.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nodes.base import Combo, Interrupted, NodeContext, NodeEnv, NodeRegistry, NodeResult
from server.cache import CacheEntry, OutputCache, signature
from server.validation import ValidatedPrompt, apply_prompt_hooks, validate_prompt

log = logging.getLogger("fluxloom.executor")

Listener = Callable[[str, dict[str, Any]], None]
# Signature prefix of nodes that can never be answered from the cache (see signatures()).
VOLATILE = "volatile:"
# In a validated prompt every list-valued input is a link `[source_id, slot]`, so the hot paths
# below test `type(value) is list` instead of re-checking the link's shape.


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


def _timestamp() -> int:
    return int(time.time() * 1000)


def _no_listener(event: str, data: dict[str, Any]) -> None:
    pass


class Executor:
    def __init__(
        self, registry: NodeRegistry, env: NodeEnv | None = None, cache: OutputCache | None = None
    ) -> None:
        self.registry = registry
        self.env = env or NodeEnv()
        self.cache = cache if cache is not None else OutputCache()
        self._interrupted = False
        self.current: dict[str, Any] = {}  # prompt_id, node, value, max of the running prompt
        # Identical prompts (re-queues, batch scripts) reuse their validation and signatures when
        # those depend on the prompt alone; see _prepare.
        self._prepared: OrderedDict[str, tuple[ValidatedPrompt, dict[str, str]]] = OrderedDict()
        self._static_types: dict[str, bool] = {}

    def interrupt(self) -> None:
        """Stop the running prompt at the next node boundary or progress report."""
        self._interrupted = True

    def signatures(self, vp: ValidatedPrompt) -> dict[str, str]:
        sigs: dict[str, str] = {}
        for nid in vp.order:
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
        """Validate (and, for static prompts, sign) a prompt, reusing the work done for an
        identical one. The memo key is the prompt *after* the prompt hooks, so a hook that reads
        the machine's state (e.g. which models are installed) changes the key when it matters;
        and only prompts whose node types are all static are kept, so validation that reads
        the disk (model/image choices, file fingerprints) is never reused."""
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

    def execute(
        self,
        prompt: dict[str, Any] | ValidatedPrompt,
        prompt_id: str = "",
        listener: Listener | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Run a prompt to completion. Validation errors raise `server.validation.ValidationError`;
        every other failure comes back as an ExecutionResult with status error/interrupted."""
        if isinstance(prompt, ValidatedPrompt):
            vp, sigs = prompt, None
        else:
            vp, sigs = self._prepare(prompt)
        emit_raw = listener or _no_listener
        result = ExecutionResult(prompt_id=prompt_id, status="success")
        started = time.perf_counter()
        self._interrupted = False
        self.current = {"prompt_id": prompt_id, "node": None, "value": 0, "max": 0}

        def emit(event: str, data: dict[str, Any], record: bool = False) -> None:
            if record:
                result.messages.append((event, data))
            emit_raw(event, data)

        emit("execution_start", {"prompt_id": prompt_id, "timestamp": _timestamp()}, record=True)
        for warning in vp.warnings:
            log.warning("%s", warning)
            emit("execution_warning", {"prompt_id": prompt_id, "message": warning}, record=True)
        try:
            sigs = sigs or self.signatures(vp)
        except _FingerprintFailed as failed:  # e.g. an input file vanished: name the node
            return self._fail(result, vp, failed.node_id, failed.cause, {}, emit, started)

        # Snapshot cache hits now so that an eviction mid-run cannot take them away, and run
        # only what the outputs need that is not already cached.
        hits: dict[str, CacheEntry] = {}
        for nid in vp.order:
            entry = self.cache.get(sigs[nid])
            if entry is not None:
                hits[nid] = entry
        to_run = self._needed(vp, hits)
        result.cached = [nid for nid in vp.order if nid in hits]
        emit(
            "execution_cached",
            {"nodes": list(result.cached), "prompt_id": prompt_id, "timestamp": _timestamp()},
            record=True,
        )

        values: dict[str, tuple] = {nid: e.outputs for nid, e in hits.items()}
        for nid in vp.order:
            if nid in hits and nid in vp.outputs and hits[nid].ui is not None:
                result.outputs[nid] = hits[nid].ui
                emit(
                    "executed",
                    {"node": nid, "display_node": nid, "output": hits[nid].ui, "prompt_id": prompt_id},
                )
        extra_pnginfo = (extra_data or {}).get("extra_pnginfo") or {}

        for nid in vp.order:
            if nid not in to_run:
                continue
            node = vp.prompt[nid]
            d = self.registry.get(node["class_type"])
            kwargs: dict[str, Any] = {}
            for name, value in node["inputs"].items():
                kwargs[name] = values[value[0]][value[1]] if type(value) is list else value
            if self._interrupted:
                return self._interrupt(result, vp, nid, emit, started)
            self.current.update(node=nid, value=0, max=0)
            emit("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
            ctx = NodeContext(
                env=self.env,
                node_id=nid,
                prompt_id=prompt_id,
                prompt=vp.prompt,
                extra_pnginfo=extra_pnginfo,
                on_progress=self._progress_reporter(nid, prompt_id, emit),
                is_interrupted=lambda: self._interrupted,
            )
            try:
                out = d.run(ctx, **kwargs)
            except Interrupted:
                return self._interrupt(result, vp, nid, emit, started)
            except Exception as exc:
                return self._fail(result, vp, nid, exc, kwargs, emit, started)
            ui = None
            if isinstance(out, NodeResult):
                out, ui = tuple(out.outputs), out.ui
            elif out is None:
                out = ()
            elif not isinstance(out, tuple):
                out = (out,)
            if len(out) != len(d.outputs):
                exc = TypeError(f"{d.class_type} returned {len(out)} values for {len(d.outputs)} outputs")
                return self._fail(result, vp, nid, exc, kwargs, emit, started)
            values[nid] = out
            if not sigs[nid].startswith(VOLATILE):
                self.cache.put(sigs[nid], out, ui)
            result.executed.append(nid)
            if ui is not None:
                result.outputs[nid] = ui
                emit("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id})

        result.seconds = time.perf_counter() - started
        emit("execution_success", {"prompt_id": prompt_id, "timestamp": _timestamp()}, record=True)
        emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        self.current = {}
        return result

    def _needed(self, vp: ValidatedPrompt, hits: dict[str, CacheEntry]) -> set[str]:
        """Nodes to run: walk back from the outputs, stopping at cached nodes."""
        needed: set[str] = set()
        stack = [o for o in vp.outputs if o not in hits]
        while stack:
            nid = stack.pop()
            if nid in needed:
                continue
            needed.add(nid)
            for value in vp.prompt[nid]["inputs"].values():
                if type(value) is list and value[0] not in hits:
                    stack.append(value[0])
        return needed

    def _progress_reporter(self, nid: str, prompt_id: str, emit: Callable) -> Callable:
        def report(value: int, total: int, preview: Any = None) -> None:
            self.current.update(value=value, max=total)
            emit("progress", {"value": value, "max": total, "node": nid, "prompt_id": prompt_id})

        return report

    def _interrupt(
        self, result: ExecutionResult, vp: ValidatedPrompt, nid: str, emit: Callable, started: float
    ) -> ExecutionResult:
        result.status = "interrupted"
        result.seconds = time.perf_counter() - started
        emit(
            "execution_interrupted",
            {
                "prompt_id": result.prompt_id,
                "node_id": nid,
                "node_type": vp.prompt[nid]["class_type"],
                "executed": list(result.executed),
                "timestamp": _timestamp(),
            },
            record=True,
        )
        emit("executing", {"node": None, "display_node": None, "prompt_id": result.prompt_id})
        self.current = {}
        self._interrupted = False
        return result

    def _fail(
        self,
        result: ExecutionResult,
        vp: ValidatedPrompt,
        nid: str | None,
        exc: BaseException,
        inputs: dict[str, Any],
        emit: Callable,
        started: float,
    ) -> ExecutionResult:
        message = str(exc) or type(exc).__name__
        if _is_out_of_memory(exc):
            freed = self._release_models()
            message = f"Out of memory: {message}. {freed}"
        class_type = vp.prompt[nid]["class_type"] if nid else None
        title = vp.prompt[nid].get("_meta", {}).get("title", class_type) if nid else None
        log.error("node %s (%s) failed: %s", nid, class_type, message)
        result.status = "error"
        result.seconds = time.perf_counter() - started
        result.error = {
            "prompt_id": result.prompt_id,
            "node_id": nid,
            "node_type": class_type,
            "node_title": title,
            "executed": list(result.executed),
            "exception_message": message,
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "traceback": traceback.format_exception(exc),
            "current_inputs": {k: _describe(v) for k, v in inputs.items()},
            "current_outputs": {},
            "timestamp": _timestamp(),
        }
        emit("execution_error", result.error, record=True)
        emit("executing", {"node": None, "display_node": None, "prompt_id": result.prompt_id})
        self.current = {}
        return result

    def _release_models(self) -> str:
        models = self.env.models
        if models is not None and hasattr(models, "release_all"):
            try:
                models.release_all()
                return "All models were released from memory; queue the prompt again."
            except Exception as exc:  # never hide the original error behind this one
                return f"Releasing models failed too: {exc}"
        return "Lower the resolution or batch size, or use a quantized model."


class _FingerprintFailed(Exception):
    """A node's fingerprint raised; carries the node so the error can name it."""

    def __init__(self, node_id: str, cause: Exception) -> None:
        super().__init__(str(cause))
        self.node_id, self.cause = node_id, cause


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    # Only a node that used torch can have run out of its memory: no need to import it here.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}{tuple(shape)}"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"
