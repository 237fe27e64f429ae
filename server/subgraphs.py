"""ComfyUI subgraphs, inlined: a UI-format workflow whose nodes include subgraph instances becomes
an ordinary UI workflow of plain nodes and links, which `workflow_io.ui_to_api` then converts.

ComfyUI's frontend keeps each reusable subgraph once, in `definitions.subgraphs` (its own nodes,
links, inputs and outputs); a node whose `type` is a definition's id is an instance of it. Links
that cross the boundary go through the definition's input node (id -10: its output slot k is the
instance's input k) and output node (id -20: its input slot k is the instance's output k). When
the frontend queues such a workflow it flattens it the same way this module does
(`ExecutableNodeDTO` in ComfyUI_frontend): an inner node's id is the path of instance ids down to
it, joined by ':' ("12:5", nested "12:3:5"). So errors name the inner node, the ids are the same
on every run (the output cache keeps working), and an API prompt that ComfyUI's frontend produced
from a subgraph workflow already has the ids we would give it.

Widgets: a subgraph input that feeds an inner widget is "promoted" to a widget on the instance;
the instance's `widgets_values` hold one value per such input, in the definition's input order,
and that value overrides the inner node's own (the outermost instance that sets one wins). An
instance input left unconnected with no promoted value leaves the inner widget its own value.
`properties.proxyWidgets` ([inner node id, widget name] pairs) only *shows* inner widgets on the
instance: their values live on the inner node, so there is nothing to apply.

Modes follow ComfyUI: a muted instance (mode 2) runs none of its nodes and its outputs feed
nothing; a bypassed instance (mode 4) runs none of its nodes and passes its inputs through. Both
are kept as one node of their subgraph's type, so `ui_to_api` applies its usual muting and bypass
rules to them. An instance whose definition is missing is left as it is (validation reports it).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

from nodes.base import NodeRegistry

# litegraph node modes (see workflow_io) and the values a seed's "control after generate" stores.
MODE_MUTED = 2
MODE_BYPASS = 4
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
# A subgraph's input and output nodes, unless its definition names other ids.
INPUT_NODE_ID = -10
OUTPUT_NODE_ID = -20
# What a flattened node carries to tell which subgraph it came from ("Outer › Inner").
SUBGRAPH_KEY = "subgraph"
# Nesting deeper than this is a malformed file (a definition reached through itself).
MAX_DEPTH = 64


class SubgraphError(ValueError):
    """A subgraph cannot be inlined; the message names the subgraph and the node."""


@dataclass(frozen=True)
class Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any = "*"


@dataclass(frozen=True)
class _Endpoint:
    """An output of a node that stays in the flattened workflow."""

    node_id: str
    slot: int


@dataclass(frozen=True)
class _Unconnected:
    """An instance input with no link: the inner widget gets `value`, or keeps its own (_KEEP)."""

    value: Any


_KEEP = object()


def link_table(graph: dict) -> dict[int, Link]:
    """Link id → Link, from litegraph's array form or ComfyUI's object form."""
    links: dict[int, Link] = {}
    for link in graph.get("links") or []:
        if isinstance(link, list) and len(link) >= 5:
            lid, origin, o_slot, target, t_slot = link[:5]
            kind = link[5] if len(link) > 5 else "*"
        elif isinstance(link, dict) and "id" in link:
            lid, origin, o_slot = link["id"], link.get("origin_id"), link.get("origin_slot")
            target, t_slot, kind = link.get("target_id"), link.get("target_slot"), link.get("type", "*")
        else:
            continue
        links[lid] = Link(str(origin), int(o_slot), str(target), int(t_slot), kind)
    return links


def subgraph_definitions(workflow: dict) -> dict[str, dict]:
    """Every subgraph definition of a workflow by id, nested `definitions` included."""
    found: dict[str, dict] = {}
    pending = [workflow]
    while pending:
        graph = pending.pop()
        definitions = graph.get("definitions") if isinstance(graph, dict) else None
        for definition in (definitions or {}).get("subgraphs") or []:
            if isinstance(definition, dict) and isinstance(definition.get("id"), str):
                if definition["id"] not in found:
                    found[definition["id"]] = definition
                    pending.append(definition)
    return found


@dataclass
class _Scope:
    """The root graph, or one instance of a subgraph inside its parent scope."""

    path: tuple[str, ...]  # instance ids from the root down to this scope
    nodes: dict[str, dict]  # node id (as text) → node
    links: dict[int, Link]
    names: tuple[str, ...] = ()  # subgraph names from the root down
    definition: dict | None = None
    instance: dict | None = None
    parent: _Scope | None = None
    promoted: dict[int, Any] = field(default_factory=dict)  # input slot → instance's widget value

    def flat_id(self, node_id: Any) -> str:
        return ":".join((*self.path, str(node_id)))

    def io_node_id(self, key: str, default: int) -> str:
        io_node = (self.definition or {}).get(key)
        return str(io_node.get("id", default)) if isinstance(io_node, dict) else str(default)

    def describe(self) -> str:
        return f"subgraph {self.names[-1]!r} (node {':'.join(self.path)})" if self.path else "the workflow"


def inline_subgraphs(workflow: dict[str, Any], registry: NodeRegistry | None = None) -> dict[str, Any]:
    """The workflow with every subgraph instance expanded into its nodes (ids `outer:inner`).

    Returned unchanged when it has no instance to expand. The registry places a promoted widget
    value among an inner node's positional `widgets_values`; without it such values are dropped."""
    definitions = subgraph_definitions(workflow)
    if not definitions or not any(
        isinstance(n, dict) and n.get("type") in definitions for n in workflow.get("nodes") or []
    ):
        return workflow
    return _Inliner(definitions, registry).run(workflow)


class _Inliner:
    def __init__(self, definitions: dict[str, dict], registry: NodeRegistry | None) -> None:
        self.definitions = definitions
        self.registry = registry
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self._scopes: dict[tuple[str, ...], _Scope] = {}
        self._tables: dict[str, dict[int, Link]] = {}

    def run(self, workflow: dict[str, Any]) -> dict[str, Any]:
        root = _Scope(path=(), nodes=_nodes_by_id(workflow), links=link_table(workflow))
        self._expand(root)
        by_id = {n["id"]: n for n in self.nodes}
        for lid, origin, slot, *_ in self.links:
            outputs = by_id[origin].get("outputs") or []
            if 0 <= slot < len(outputs):
                outputs[slot].setdefault("links", []).append(lid)
        flat = {k: v for k, v in workflow.items() if k not in ("nodes", "links", "definitions")}
        flat.update(nodes=self.nodes, links=self.links, last_link_id=len(self.links))
        flat["last_node_id"] = workflow.get("last_node_id", 0)
        return flat

    # --- walking the scopes ---------------------------------------------------------------------

    def _active_definition(self, node: dict) -> dict | None:
        """The definition to expand `node` into: none for plain, muted or bypassed nodes."""
        definition = self.definitions.get(node.get("type"))
        if definition is None or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            return None
        return definition

    def _expand(self, scope: _Scope) -> None:
        for node in scope.nodes.values():
            definition = self._active_definition(node)
            if definition is None:
                self.nodes.append(self._emit(scope, node))
                continue
            child = self._child(scope, node, definition)
            with _naming(child):
                self._expand(child)

    def _child(self, scope: _Scope, instance: dict, definition: dict) -> _Scope:
        path = (*scope.path, str(instance["id"]))
        child = self._scopes.get(path)
        if child is not None:
            return child
        name = str(definition.get("name") or definition["id"])
        if len(path) > MAX_DEPTH or any(s.definition is definition for s in _ancestors(scope)):
            raise SubgraphError(f"subgraph {name!r} contains itself (node {':'.join(path)})")
        child = _Scope(
            path=path,
            nodes={},
            links={},
            names=(*scope.names, name),
            definition=definition,
            instance=instance,
            parent=scope,
        )
        with _naming(child):
            if definition["id"] not in self._tables:
                self._tables[definition["id"]] = link_table(definition)
            child.nodes, child.links = _nodes_by_id(definition), self._tables[definition["id"]]
            child.promoted = _promoted_values(child)
        self._scopes[path] = child
        return child

    # --- emitting flattened nodes ---------------------------------------------------------------

    def _emit(self, scope: _Scope, node: dict) -> dict:
        flat = copy.deepcopy(node)
        flat["id"] = scope.flat_id(node.get("id"))
        if scope.names:
            flat[SUBGRAPH_KEY] = " › ".join(scope.names)
        if node.get("type") in self.definitions:  # a muted or bypassed instance: one node of its type
            _instance_slots(flat, self.definitions[node["type"]])
        for slot, inp in enumerate(flat.get("inputs") or []):
            if isinstance(inp, dict):
                self._connect(scope, flat, slot, inp)
        for out in flat.get("outputs") or []:
            if isinstance(out, dict):
                out["links"] = []
        return flat

    def _connect(self, scope: _Scope, flat: dict, slot: int, inp: dict) -> None:
        """Point one input of a flattened node at its source, through any subgraph boundary."""
        link = scope.links.get(inp.get("link")) if inp.get("link") is not None else None
        inp["link"] = None
        if link is None:
            return
        source = self._resolve(scope, link, depth=0)
        if isinstance(source, _Endpoint):
            lid = len(self.links) + 1
            self.links.append([lid, source.node_id, source.slot, flat["id"], slot, link.type])
            inp["link"] = lid
        elif isinstance(source, _Unconnected) and source.value is not _KEEP:
            widget = inp.get("widget") if isinstance(inp.get("widget"), dict) else {}
            self._set_widget(flat, widget.get("name") or inp.get("name"), source.value)

    def _resolve(self, scope: _Scope, link: Link, depth: int) -> _Endpoint | _Unconnected | None:
        """Where the value on `link` comes from in the flattened workflow: an output of a node that
        stays, an unconnected instance input, or nothing (a dangling link)."""
        if depth > 4 * MAX_DEPTH:
            raise SubgraphError(f"links loop through {scope.describe()}")
        if scope.definition is not None and link.origin_id == scope.io_node_id("inputNode", INPUT_NODE_ID):
            return self._instance_input(scope, link.origin_slot, depth)
        node = scope.nodes.get(link.origin_id)
        if node is None:
            return None
        definition = self._active_definition(node)
        if definition is None:
            return _Endpoint(scope.flat_id(node.get("id")), link.origin_slot)
        child = self._child(scope, node, definition)
        inner = _output_link(child, link.origin_slot)
        return self._resolve(child, inner, depth + 1) if inner is not None else None

    def _instance_input(self, scope: _Scope, slot: int, depth: int) -> _Endpoint | _Unconnected | None:
        """The source of input `slot` of the instance that `scope` expands, in the parent scope."""
        inp = _instance_input(scope.instance, scope.definition, slot)
        outer = scope.parent.links.get(inp.get("link")) if inp and inp.get("link") is not None else None
        source = self._resolve(scope.parent, outer, depth + 1) if outer is not None else _Unconnected(_KEEP)
        if isinstance(source, _Unconnected) and source.value is _KEEP:
            # No outer level set a value: this instance's own promoted widget value, if any.
            return _Unconnected(scope.promoted.get(slot, _KEEP))
        return source

    def _set_widget(self, node: dict, name: str | None, value: Any) -> None:
        """Give widget `name` of a flattened node `value` (a promoted widget's value)."""
        values = node.get("widgets_values")
        if isinstance(values, dict):
            values[name] = value
            return
        index = widget_index(node, name, self.registry)
        if index is not None and isinstance(values, list):
            if index < len(values):
                values[index] = value
            elif index == len(values):
                values.append(value)


@contextlib.contextmanager
def _naming(scope: _Scope):
    """Turn what a hand-edited definition breaks (a link without a slot, a node that is not an
    object) into a SubgraphError that names the subgraph and its instance."""
    try:
        yield
    except SubgraphError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise SubgraphError(f"{scope.describe()} is malformed ({type(exc).__name__}: {exc})") from exc


def widget_index(node: dict, name: str | None, registry: NodeRegistry | None) -> int | None:
    """Position of widget `name` in a UI node's `widgets_values` list: widgets in declaration order,
    required before optional, each seed followed by its control value (as ComfyUI saves them)."""
    d = registry.get(node.get("type")) if registry is not None else None
    values = node.get("widgets_values")
    if d is None or not isinstance(values, list):
        return None
    i = 0
    for w in sorted(d.widgets(), key=lambda w: w.optional):
        if w.name == name:
            return i
        i += 1
        if getattr(w.spec, "control_after_generate", False) and i < len(values) and _is_control(values[i]):
            i += 1
    return None


def _is_control(value: Any) -> bool:
    return isinstance(value, str) and value in CONTROL_VALUES


# --- reading definitions and instances ----------------------------------------------------------


def _nodes_by_id(graph: dict) -> dict[str, dict]:
    return {str(n["id"]): n for n in graph.get("nodes") or [] if isinstance(n, dict) and "id" in n}


def _ancestors(scope: _Scope | None):
    while scope is not None:
        yield scope
        scope = scope.parent


def _definition_io(definition: dict, key: str) -> list[dict]:
    return [x if isinstance(x, dict) else {} for x in definition.get(key) or []]


def _instance_input(instance: dict, definition: dict, slot: int) -> dict | None:
    """The instance's input for the definition's input `slot`, matched by name (saved instances
    may list only some of their inputs, in another order); the n-th of equal names pairs with the
    n-th."""
    declared = _definition_io(definition, "inputs")
    if not 0 <= slot < len(declared):
        return None
    name = declared[slot].get("name")
    nth = sum(1 for d in declared[:slot] if d.get("name") == name)
    same = [i for i in instance.get("inputs") or [] if isinstance(i, dict) and i.get("name") == name]
    return same[nth] if nth < len(same) else None


def _output_link(scope: _Scope, slot: int) -> Link | None:
    """The inner link that feeds output `slot` of the subgraph `scope` expands."""
    output_node = scope.io_node_id("outputNode", OUTPUT_NODE_ID)
    for link in scope.links.values():
        if link.target_id == output_node and link.target_slot == slot:
            return link
    return None


def _feeds_widget(scope: _Scope, slot: int) -> bool:
    """Whether the subgraph's input `slot` is linked to a widget of an inner node (so it is
    promoted to a widget on the instance)."""
    input_node = scope.io_node_id("inputNode", INPUT_NODE_ID)
    for link in scope.links.values():
        if link.origin_id == input_node and link.origin_slot == slot:
            target = scope.nodes.get(link.target_id) or {}
            inputs = target.get("inputs") or []
            if 0 <= link.target_slot < len(inputs) and isinstance(inputs[link.target_slot], dict):
                if "widget" in inputs[link.target_slot]:
                    return True
    return False


def promoted_widget_values(instance: dict, definition: dict) -> dict[int, Any]:
    """Input slot of `definition` → the value that `instance`'s own widget for it holds."""
    scope = _Scope(path=("",), nodes=_nodes_by_id(definition), links=link_table(definition))
    scope.definition, scope.instance = definition, instance
    return _promoted_values(scope)


def _promoted_values(scope: _Scope) -> dict[int, Any]:
    """Input slot → the value the instance's own widget for it holds. Recent frontends also save
    them by input name (`widgets_values_named`); `widgets_values` has one per promoted input, in
    the definition's input order (some frontends also saved a seed's control value after it)."""
    declared = _definition_io(scope.definition, "inputs")
    for values in (scope.instance.get("widgets_values_named"), scope.instance.get("widgets_values")):
        if isinstance(values, dict):
            return {
                i: values[d["name"]] for i, d in enumerate(declared) if values.get(d.get("name")) is not None
            }
    values = scope.instance.get("widgets_values")
    if not isinstance(values, list) or not values:
        return {}
    promoted = [slot for slot in range(len(declared)) if _feeds_widget(scope, slot)]
    spare = len(values) - len(promoted)  # control values saved among them
    found: dict[int, Any] = {}
    i = 0
    for slot in promoted:
        if i >= len(values):
            break
        if values[i] is not None:
            found[slot] = values[i]
        i += 1
        if spare > 0 and i < len(values) and _is_control(values[i]) and declared[slot].get("type") == "INT":
            i += 1
            spare -= 1
    return found


def _instance_slots(flat: dict, definition: dict) -> None:
    """Give a kept (muted or bypassed) instance the inputs and outputs its definition declares, so
    that bypass can match types: saved instances may list only some of their inputs."""
    saved = flat.get("inputs") or []
    inputs = []
    for slot, declared in enumerate(_definition_io(definition, "inputs")):
        inp = _instance_input({"inputs": saved}, definition, slot) or {}
        inputs.append(
            {"name": declared.get("name"), "type": declared.get("type", "*"), "link": inp.get("link")}
        )
    flat["inputs"] = inputs
    flat["outputs"] = [
        {"name": d.get("name"), "type": d.get("type", "*"), "links": []}
        for d in _definition_io(definition, "outputs")
    ]


def add_subgraph_meta(prompt: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Copy each inlined node's subgraph name into its API `_meta` (next to the title), so that
    errors and the UI can say which subgraph a node such as "12:5" is in."""
    for node in flat.get("nodes") or []:
        where = node.get(SUBGRAPH_KEY) if isinstance(node, dict) else None
        entry = prompt.get(str(node.get("id"))) if where else None
        if isinstance(entry, dict) and isinstance(entry.get("_meta"), dict):
            entry["_meta"][SUBGRAPH_KEY] = where
    return prompt
