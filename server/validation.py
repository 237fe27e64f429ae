"""API-format prompt → validated DAG (networkx), with every error reported at once in ComfyUI's
JSON shape: `{"error": {...}, "node_errors": {id: {"errors": [...], "class_type",
"dependent_outputs"}}}`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from nodes.base import (
    COMBO,
    STRING,
    Boolean,
    Combo,
    Float,
    Input,
    Int,
    NodeDef,
    NodeEnv,
    NodeRegistry,
    Socket,
    String,
    accepts,
)
from server import events


@dataclass
class ValidatedPrompt:
    """A prompt that may run: coerced inputs, the nodes the outputs need, in execution order."""

    prompt: dict[str, Any]  # the API prompt with coerced constant values
    order: list[str]  # needed node ids, topologically sorted
    outputs: list[str]  # output node ids
    warnings: list[str] = field(default_factory=list)  # from env.prompt_hooks


@dataclass
class ValidationError(Exception):
    error: dict[str, Any]
    node_errors: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] | None = None  # the API prompt judged, when the caller has it

    def __str__(self) -> str:
        return format_errors(self.as_json())

    def as_json(self) -> dict[str, Any]:
        return events.error_body(self.error, self.node_errors)


_err = events.error_item


def is_link(value: Any) -> bool:
    # type() checks, not isinstance: bool is an int, and this runs for every input of every prompt.
    return type(value) is list and len(value) == 2 and type(value[1]) is int and type(value[0]) in (str, int)


# A value already of its widget's native type needs no conversion (the common case).
_NATIVE = {Int: int, Float: float, String: str, Boolean: bool, Combo: str}


def coerce_value(spec: Any, value: Any) -> Any:
    """Coerce a constant as ComfyUI does ("7" → 7 for INT). Raises ValueError/TypeError."""
    if type(value) is _NATIVE.get(type(spec)) and (type(value) is not float or math.isfinite(value)):
        return value
    if isinstance(spec, Int):
        if isinstance(value, bool):
            raise TypeError("a boolean is not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value} is not a whole number")
            return int(value)
        return int(value)
    if isinstance(spec, Float):
        if isinstance(value, bool):
            raise TypeError("a boolean is not a number")
        out = float(value)
        if not math.isfinite(out):
            raise ValueError(f"{value} is not a finite number")
        return out
    if isinstance(spec, Boolean):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"{value!r} is not a boolean")
    if isinstance(spec, String):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not a string")
    if isinstance(spec, Combo):
        if not isinstance(value, str):
            raise TypeError(f"{type(value).__name__} is not one of the choices")
        return value
    return value


def _check_range(spec: Any, value: Any) -> dict | None:
    if type(spec) is Int or type(spec) is Float:
        if value < spec.min:
            return _err("value_smaller_than_min", f"Value {value} smaller than min of {spec.min}")
        if value > spec.max:
            return _err("value_bigger_than_max", f"Value {value} bigger than max of {spec.max}")
    return None


def _info(inp: Input) -> dict[str, Any]:
    return {"input_name": inp.name, "input_config": inp.type.name}


def apply_prompt_hooks(prompt: Any, env: NodeEnv | None) -> tuple[Any, list[str]]:
    """Run `env.prompt_hooks` on a copy of the prompt; return it and the hooks' warnings.
    Hooks rewrite input values, so the prompt and each node's `inputs` are copied (a deep copy
    would cost more than validating)."""
    if env is None or not env.prompt_hooks or not isinstance(prompt, dict):
        return prompt, []
    hooked = {
        nid: {**n, "inputs": dict(n["inputs"])}
        if isinstance(n, dict) and isinstance(n.get("inputs"), dict)
        else n
        for nid, n in prompt.items()
    }
    warnings: list[str] = []
    for hook in env.prompt_hooks:
        warnings.extend(hook(hooked, env))
    return hooked, warnings


DEFAULT_MAX_NODES = 200_000  # nodes per prompt (--max-nodes); a request is refused above it


def validate_prompt(
    prompt: Any,
    registry: NodeRegistry,
    env: NodeEnv | None = None,
    *,
    hooks_applied: bool = False,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> ValidatedPrompt:
    """Validate an API-format prompt; raise ValidationError carrying every error found.
    `hooks_applied`: the caller already ran `apply_prompt_hooks` (and keeps its warnings)."""
    if not isinstance(prompt, dict) or not prompt:
        raise ValidationError(_err("invalid_prompt", "Prompt must be a non-empty JSON object of nodes"))
    if len(prompt) > max_nodes:
        raise ValidationError(
            _err(
                "prompt_too_large",
                f"Prompt has {len(prompt):,} nodes; the limit is {max_nodes:,}",
                "raise it with `fluxloom serve --max-nodes N` if this graph is intended",
            )
        )
    warnings: list[str] = []
    if not hooks_applied:
        prompt, warnings = apply_prompt_hooks(prompt, env)
    check = _NodeChecker(prompt, registry, env)
    coerced = check.all_nodes()
    graph, outputs, order, needed = _plan(prompt, coerced, check.edges, registry, check)
    _raise_if_invalid(check.errors, needed, coerced, outputs, prompt, graph)
    return ValidatedPrompt(prompt=coerced, order=order, outputs=outputs, warnings=warnings)


class _NodeChecker:
    """Checks every node of a prompt, collecting all errors: the node's type, then each input as
    a link (source, slot, type) or as a constant (conversion, range, choices)."""

    def __init__(self, prompt: dict, registry: NodeRegistry, env: NodeEnv | None) -> None:
        self.prompt, self.registry, self.env = prompt, registry, env
        self.errors: dict[str, list[dict]] = {}
        self.edges: list[tuple[str, str]] = []
        self._choices: dict[int, list[str]] = {}  # combo spec id → choices, read once per prompt

    def add(self, node_id: str, error: dict) -> None:
        self.errors.setdefault(node_id, []).append(error)

    def all_nodes(self) -> dict[str, Any]:
        coerced: dict[str, Any] = {}
        for raw_id, node in self.prompt.items():
            node_id = raw_id if type(raw_id) is str else str(raw_id)
            d = self.node_type(node_id, node)
            if d is None:
                continue
            inputs = node.get("inputs", {})
            if not isinstance(inputs, dict):
                self.add(node_id, _err("invalid_node", f"Node {node_id}: inputs must be an object"))
                continue
            coerced[node_id] = {
                "class_type": d.class_type,
                "inputs": self.inputs(node_id, d, inputs),
                # The executor and the CLI read `_meta.title`; anything but an object would break
                # them, so a missing one names the node by its class_type.
                "_meta": meta if isinstance(meta := node.get("_meta"), dict) else {"title": d.class_type},
            }
        return coerced

    def node_type(self, node_id: str, node: Any) -> NodeDef | None:
        if not isinstance(node, dict) or "class_type" not in node:
            self.add(node_id, _err("invalid_node", f"Node {node_id} has no class_type"))
            return None
        class_type = node["class_type"]
        if type(class_type) is not str:
            # A list or object here would not even be hashable as a registry key.
            self.add(node_id, _err("invalid_node", f"Node {node_id}: class_type must be a string"))
            return None
        d = self.registry.get(class_type)
        if d is None:
            message = f"Node type '{class_type}' does not exist"
            self.add(
                node_id,
                _err("missing_node_type", message, f"Node {node_id} has unknown class_type {class_type!r}"),
            )
        return d

    def inputs(self, node_id: str, d: NodeDef, given: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for inp in d.inputs:
            value = given.get(inp.name)
            if value is None and inp.aliases:  # a workflow saved before the input was renamed
                value = next((given[a] for a in inp.aliases if given.get(a) is not None), None)
            if value is None:
                if not inp.optional:
                    self.add(
                        node_id,
                        _err("required_input_missing", "Required input is missing", inp.name, **_info(inp)),
                    )
                continue
            checked = (
                self.link(node_id, inp, value) if type(value) is list else self.constant(node_id, inp, value)
            )
            if checked is not _INVALID:
                out[inp.name] = checked
        return out

    def link(self, node_id: str, inp: Input, value: list) -> Any:
        def bad(message: str, type_: str = "bad_linked_input", **extra: Any) -> Any:
            self.add(node_id, _err(type_, message, f"{inp.name}, {value!r}", **extra, **_info(inp)))
            return _INVALID

        if not is_link(value):
            return bad(
                "Bad linked input, must be a length-2 list of [node_id, slot_index]", received_value=value
            )
        src_id, slot = value[0] if type(value[0]) is str else str(value[0]), value[1]
        src = self.prompt.get(src_id) or self.prompt.get(value[0])
        if src is None:
            return bad(
                f"Input '{inp.name}' links to node {src_id}, which does not exist", received_value=value
            )
        self.edges.append((src_id, node_id))
        src_type = src.get("class_type") if isinstance(src, dict) else None
        src_def = self.registry.get(src_type) if type(src_type) is str else None
        if src_def is None:
            return [src_id, slot]  # the source's own error is reported on the source
        if not 0 <= slot < len(src_def.outputs):
            return bad(
                f"Input '{inp.name}' links to output slot {slot} of node {src_id} "
                f"({src_def.class_type}), which has {len(src_def.outputs)} outputs",
                received_value=value,
            )
        out_type = src_def.outputs[slot].type
        wanted = _COMBO_LINK if isinstance(inp.spec, Combo) else inp.type
        if not accepts(wanted, out_type):
            self.add(
                node_id,
                _err(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{inp.name}, received_type({out_type.name}) mismatch input_type({inp.type.name})",
                    received_type=out_type.name,
                    linked_node=value,
                    **_info(inp),
                ),
            )
        return [src_id, slot]

    def constant(self, node_id: str, inp: Input, value: Any) -> Any:
        if type(inp.spec) is Socket:
            message = f"Input '{inp.name}' takes a {inp.type.name} link, not a value"
            self.add(
                node_id,
                _err(
                    "invalid_input_type",
                    message,
                    f"{inp.name}, {value!r}",
                    received_value=value,
                    **_info(inp),
                ),
            )
            return _INVALID
        try:
            value = coerce_value(inp.spec, value)
        except (TypeError, ValueError, OverflowError) as exc:
            self.add(
                node_id,
                _err(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {inp.type.name} value",
                    f"{inp.name}, {value!r}, {exc}",
                    received_value=value,
                    **_info(inp),
                ),
            )
            return _INVALID
        bad = _check_range(inp.spec, value)
        if bad is None and isinstance(inp.spec, Combo):
            bad = self.choice(inp, value)
        if bad is not None:
            bad["details"] = bad["details"] or f"{inp.name}"
            bad["extra_info"].update(received_value=value, **_info(inp))
            self.add(node_id, bad)
            return _INVALID
        return value

    def choice(self, inp: Input, value: str) -> dict | None:
        choices = self._choices.get(id(inp.spec))
        if choices is None:
            choices = self._choices[id(inp.spec)] = inp.spec.resolve(self.env)
        if value in choices:
            return None
        shown = ", ".join(choices) if choices else "(none installed)"
        return _err("value_not_in_list", "Value not in list", f"{inp.name}: '{value}' not in [{shown}]")


_INVALID = object()  # an input whose error was recorded: left out of the coerced prompt
_COMBO_LINK = COMBO | STRING  # what may feed a combo widget


def _plan(
    prompt: dict, coerced: dict, edges: list, registry: NodeRegistry, check: _NodeChecker
) -> tuple[nx.DiGraph, list[str], list[str], set[str]]:
    """The graph, the output nodes, what they need in execution order; a cycle is an error on
    each node in it."""
    # Built in bulk: adding nodes and edges one by one costs more than the rest of validation.
    graph = nx.DiGraph()
    graph.add_nodes_from(str(k) for k in prompt)
    graph.add_edges_from(edges)
    outputs = [nid for nid, n in coerced.items() if registry.get(n["class_type"]).output_node]
    needed: set[str] = set()
    for out in outputs:
        if out not in needed:
            needed |= nx.ancestors(graph, out)
            needed.add(out)
    # Views over a graph are slow to walk; most prompts need every node, so use the graph itself.
    sub = graph if len(needed) == len(graph) else graph.subgraph(needed).copy()
    try:
        order = list(nx.topological_sort(sub))
    except nx.NetworkXUnfeasible:
        order = []
        cycle_nodes = {
            n for c in nx.strongly_connected_components(sub) for n in c if len(c) > 1 or sub.has_edge(n, n)
        }
        listed = ", ".join(sorted(cycle_nodes, key=_sort_key))
        for nid in sorted(cycle_nodes, key=_sort_key):
            check.add(nid, _err("dependency_cycle", "Node is part of a cycle", f"nodes {listed}"))
    return graph, outputs, order, needed


def _raise_if_invalid(
    errors: dict, needed: set[str], coerced: dict, outputs: list[str], prompt: dict, graph: nx.DiGraph
) -> None:
    # Errors on nodes that no output needs do not stop the prompt, as in ComfyUI; but a node
    # whose type is unknown is always an error, since the graph cannot be understood.
    relevant = {nid: errs for nid, errs in errors.items() if nid in needed or nid not in coerced}
    if not outputs:
        error = _err(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "add an output node such as SaveImage or PreviewImage",
        )
        raise ValidationError(error, _shape(relevant, prompt, graph, outputs))
    if relevant:
        error = _err("prompt_outputs_failed_validation", "Prompt outputs failed validation")
        raise ValidationError(error, _shape(relevant, prompt, graph, outputs))


def _sort_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _shape(errors: dict[str, list], prompt: dict, graph: nx.DiGraph, outputs: list[str]) -> dict:
    shaped = {}
    for nid, errs in errors.items():
        node = prompt.get(nid)
        class_type = node.get("class_type") if isinstance(node, dict) else None
        dependents = [o for o in outputs if o == nid or (nid in graph and nx.has_path(graph, nid, o))]
        shaped[nid] = {"errors": errs, "dependent_outputs": dependents, "class_type": class_type}
    return shaped


def format_errors(payload: dict[str, Any], prompt: dict[str, Any] | None = None) -> str:
    """Readable text for a ComfyUI-shaped error payload (CLI and logs)."""
    lines = [f"{payload['error'].get('message', 'invalid prompt')}"]
    if payload["error"].get("details"):
        lines[0] += f": {payload['error']['details']}"
    for nid, info in payload.get("node_errors", {}).items():
        title = ""
        meta = prompt[nid].get("_meta") if prompt and isinstance(prompt.get(nid), dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            title = meta["title"]
        head = f"  node {nid} ({info.get('class_type')}{', ' + repr(title) if title else ''}):"
        lines.append(head)
        for e in info["errors"]:
            detail = f" — {e['details']}" if e.get("details") else ""
            lines.append(f"    [{e['type']}] {e['message']}{detail}")
    return "\n".join(lines)
