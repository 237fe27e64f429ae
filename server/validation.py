"""API-format prompt → validated DAG (networkx), with every error reported at once in ComfyUI's
JSON shape: `{"error": {...}, "node_errors": {id: {"errors": [...], "class_type",
"dependent_outputs"}}}`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from nodes.base import (
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

    def __str__(self) -> str:
        return format_errors(self.as_json())

    def as_json(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


def _err(type_: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


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
    return {"input_name": inp.name, "input_config": inp.type}


def _output_type(d: NodeDef, slot: int) -> str | None:
    return d.outputs[slot].type if 0 <= slot < len(d.outputs) else None


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


def validate_prompt(
    prompt: Any, registry: NodeRegistry, env: NodeEnv | None = None, *, hooks_applied: bool = False
) -> ValidatedPrompt:
    """Validate an API-format prompt; raise ValidationError carrying every error found.
    `hooks_applied`: the caller already ran `apply_prompt_hooks` (and keeps its warnings)."""
    if not isinstance(prompt, dict) or not prompt:
        raise ValidationError(_err("invalid_prompt", "Prompt must be a non-empty JSON object of nodes"))

    warnings: list[str] = []
    if not hooks_applied:
        prompt, warnings = apply_prompt_hooks(prompt, env)
    node_errors: dict[str, list[dict]] = {}
    coerced: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    combo_cache: dict[int, list[str]] = {}

    def add(node_id: str, error: dict) -> None:
        node_errors.setdefault(node_id, []).append(error)

    for raw_id, node in prompt.items():
        node_id = raw_id if type(raw_id) is str else str(raw_id)
        if not isinstance(node, dict) or "class_type" not in node:
            add(node_id, _err("invalid_node", f"Node {node_id} has no class_type"))
            continue
        if type(node["class_type"]) is not str:
            # A list or object here would not even be hashable as a registry key.
            add(node_id, _err("invalid_node", f"Node {node_id}: class_type must be a string"))
            continue
        d = registry.get(node["class_type"])
        if d is None:
            add(
                node_id,
                _err(
                    "missing_node_type",
                    f"Node type '{node['class_type']}' does not exist",
                    f"Node {node_id} has unknown class_type {node['class_type']!r}",
                ),
            )
            continue
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            add(node_id, _err("invalid_node", f"Node {node_id}: inputs must be an object"))
            continue
        out_inputs: dict[str, Any] = {}
        for inp in d.inputs:
            value = inputs.get(inp.name)
            if value is None:
                if not inp.optional:
                    add(
                        node_id,
                        _err("required_input_missing", "Required input is missing", inp.name, **_info(inp)),
                    )
                continue
            if type(value) is list:
                if not is_link(value):
                    add(
                        node_id,
                        _err(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            f"{inp.name}, {value!r}",
                            received_value=value,
                            **_info(inp),
                        ),
                    )
                    continue
                src_id, slot = value[0] if type(value[0]) is str else str(value[0]), value[1]
                src = prompt.get(src_id) or prompt.get(value[0])
                src_type = src.get("class_type") if isinstance(src, dict) else None
                src_def = registry.get(src_type) if type(src_type) is str else None
                if src is None:
                    add(
                        node_id,
                        _err(
                            "bad_linked_input",
                            f"Input '{inp.name}' links to node {src_id}, which does not exist",
                            f"{inp.name}, {value!r}",
                            received_value=value,
                            **_info(inp),
                        ),
                    )
                    continue
                edges.append((src_id, node_id))
                out_inputs[inp.name] = [src_id, slot]
                if src_def is None:
                    continue  # the source's own error is reported on the source
                out_type = _output_type(src_def, slot)
                if out_type is None:
                    add(
                        node_id,
                        _err(
                            "bad_linked_input",
                            f"Input '{inp.name}' links to output slot {slot} of node {src_id} "
                            f"({src_def.class_type}), which has {len(src_def.outputs)} outputs",
                            f"{inp.name}, {value!r}",
                            received_value=value,
                            **_info(inp),
                        ),
                    )
                    continue
                wanted = inp.spec.type if isinstance(inp.spec, Socket) else inp.type
                if isinstance(inp.spec, Combo):
                    wanted = "COMBO,STRING"
                if not accepts(wanted, out_type):
                    add(
                        node_id,
                        _err(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{inp.name}, received_type({out_type}) mismatch input_type({inp.type})",
                            received_type=out_type,
                            linked_node=value,
                            **_info(inp),
                        ),
                    )
                continue
            if type(inp.spec) is Socket:
                add(
                    node_id,
                    _err(
                        "invalid_input_type",
                        f"Input '{inp.name}' takes a {inp.spec.type} link, not a value",
                        f"{inp.name}, {value!r}",
                        received_value=value,
                        **_info(inp),
                    ),
                )
                continue
            try:
                value = coerce_value(inp.spec, value)
            except (TypeError, ValueError, OverflowError) as exc:
                add(
                    node_id,
                    _err(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {inp.type} value",
                        f"{inp.name}, {value!r}, {exc}",
                        received_value=value,
                        **_info(inp),
                    ),
                )
                continue
            bad = _check_range(inp.spec, value)
            if bad is None and isinstance(inp.spec, Combo):
                choices = combo_cache.get(id(inp.spec))
                if choices is None:
                    choices = combo_cache[id(inp.spec)] = inp.spec.resolve(env)
                if value not in choices:
                    shown = ", ".join(choices) if choices else "(none installed)"
                    bad = _err(
                        "value_not_in_list", "Value not in list", f"{inp.name}: '{value}' not in [{shown}]"
                    )
            if bad is not None:
                bad["details"] = bad["details"] or f"{inp.name}"
                bad["extra_info"].update(received_value=value, **_info(inp))
                add(node_id, bad)
                continue
            out_inputs[inp.name] = value
        coerced[node_id] = {
            "class_type": d.class_type,
            "inputs": out_inputs,
            # The executor and the CLI read `_meta.title`; anything but an object would break them.
            "_meta": meta if isinstance(meta := node.get("_meta"), dict) else {"title": d.display_name},
        }

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
            add(nid, _err("dependency_cycle", "Node is part of a cycle", f"nodes {listed}"))

    # Errors on nodes that no output needs do not stop the prompt, as in ComfyUI; but a node
    # whose type is unknown is always an error, since the graph cannot be understood.
    relevant = {nid: errs for nid, errs in node_errors.items() if nid in needed or nid not in coerced}
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

    return ValidatedPrompt(prompt=coerced, order=order, outputs=outputs, warnings=warnings)


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
