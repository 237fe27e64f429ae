"""Workflow formats: the UI format (litegraph's serialized graph, as ComfyUI saves it) converts to
the API format that executes; PNGs carry both in tEXt chunks; overrides address inputs by node id
or title."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodes.base import NodeDef, NodeRegistry
from server.paths import workflows_dir
from server.subgraphs import SubgraphError, add_subgraph_meta, inline_subgraphs

WORKFLOWS_DIR = workflows_dir()

# litegraph node modes: 0 always, 2 never (muted), 4 bypass.
MODE_MUTED = 2
MODE_BYPASS = 4
# Values that a seed-like widget's "control after generate" stores after the widget's value.
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# ComfyUI's frontend-only ("virtual") nodes: never sent to the server. A Reroute passes its input
# through; a PrimitiveNode has already written its value into the widget it feeds; notes do nothing.
REROUTE = "Reroute"
VIRTUAL_NODES = frozenset({REROUTE, "PrimitiveNode", "Note", "MarkdownNote"})
# resolve() result for a link from a virtual node with no source: keep the widget's own value.
_KEEP_WIDGET = object()


class WorkflowError(ValueError):
    """A workflow file could not be read or converted; the message says why."""


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _links_by_id(workflow: dict) -> dict[int, tuple[int, int, int, int, str]]:
    """link id → (origin node, origin slot, target node, target slot, type); accepts both the
    array form of litegraph 0.4 and the object form of ComfyUI's schema version 1."""
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, list) and len(link) >= 5:
            lid, o_id, o_slot, t_id, t_slot = link[:5]
            links[lid] = (o_id, o_slot, t_id, t_slot, link[5] if len(link) > 5 else "*")
        elif isinstance(link, dict):
            links[link["id"]] = (
                link["origin_id"],
                link["origin_slot"],
                link["target_id"],
                link["target_slot"],
                link.get("type", "*"),
            )
    return links


def ui_to_api(workflow: dict[str, Any], registry: NodeRegistry) -> dict[str, Any]:
    """Convert a UI-format workflow to an API prompt. Widget values are matched to inputs in
    declaration order (skipping the extra control value after a seed widget); links become
    `[source_id, slot]`; muted nodes are dropped; bypassed nodes pass their first input of a
    matching type through, as in ComfyUI."""
    if not is_ui_format(workflow):
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links')")
    try:
        flat = inline_subgraphs(workflow, registry)  # subgraph instances → their nodes, ids "outer:inner"
        return add_subgraph_meta(_ui_to_api(flat, registry), flat)
    except SubgraphError as exc:  # names the subgraph and the instance
        raise WorkflowError(str(exc)) from exc
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        # A hand-edited or truncated file: say so rather than fail with a bare traceback.
        raise WorkflowError(f"malformed UI workflow ({type(exc).__name__}: {exc})") from exc


def _ui_to_api(workflow: dict[str, Any], registry: NodeRegistry) -> dict[str, Any]:
    return _UiConverter(workflow, registry).prompt()


class _UiConverter:
    """One UI workflow's conversion: its links and nodes by id, and the steps per node."""

    def __init__(self, workflow: dict[str, Any], registry: NodeRegistry) -> None:
        self.registry = registry
        self.links = _links_by_id(workflow)
        self.nodes = {n["id"]: n for n in workflow["nodes"] if isinstance(n, dict) and "id" in n}

    def prompt(self) -> dict[str, Any]:
        prompt: dict[str, Any] = {}
        for nid, n in sorted(self.nodes.items(), key=lambda kv: _id_order(kv[0])):
            if n.get("mode") in (MODE_MUTED, MODE_BYPASS) or self.is_virtual(n):
                continue
            class_type = n.get("type")
            d = self.registry.get(class_type)
            inputs = self.widget_inputs(n, d) if d is not None else {}
            self.link_inputs(n, inputs)
            title = n.get("title") or (d.display_name if d else class_type)
            prompt[str(nid)] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}
        return prompt

    def is_virtual(self, n: dict) -> bool:
        return n.get("type") in VIRTUAL_NODES and self.registry.get(n.get("type")) is None

    def widget_inputs(self, n: dict, d: NodeDef) -> dict[str, Any]:
        """Widget values by name. Required widgets come first, then optional ones: the order of
        `input_order`, in which ComfyUI and the canvas create widgets and so save
        `widgets_values` (a seed's control value follows the seed, and is skipped)."""
        widgets = sorted(d.widgets(), key=lambda w: w.optional)
        values = n.get("widgets_values")
        if isinstance(values, dict):
            return {w.name: values[w.name] for w in widgets if w.name in values}
        inputs: dict[str, Any] = {}
        if not isinstance(values, list):
            return inputs
        i = 0
        for w in widgets:
            if i >= len(values):
                break
            inputs[w.name] = values[i]
            i += 1
            if (
                getattr(w.spec, "control_after_generate", False)
                and i < len(values)
                and values[i] in CONTROL_VALUES
            ):
                i += 1
        return inputs

    def link_inputs(self, n: dict, inputs: dict[str, Any]) -> None:
        """Linked inputs become `[source_id, slot]`; a link from a muted node removes the input."""
        for inp in n.get("inputs") or []:
            lid = inp.get("link")
            if lid is None or lid not in self.links:
                continue
            o_id, o_slot, *_ = self.links[lid]
            source = self.resolve(o_id, o_slot)
            if source is _KEEP_WIDGET:
                continue
            if source is not None:
                inputs[inp["name"]] = source
            else:
                inputs.pop(inp["name"], None)

    def resolve(self, origin_id: Any, origin_slot: int, seen: frozenset = frozenset()) -> Any:
        """Follow links through bypassed nodes and reroutes; None when the source is muted."""
        src = self.nodes.get(origin_id)
        if src is None or origin_id in seen:
            return None
        if self.is_virtual(src):  # frontend-only: its mode does not matter (as in ComfyUI)
            # A Reroute forwards its one input; any other virtual node feeds no link.
            first = (src.get("inputs") or [{}])[0] if src.get("type") == REROUTE else {}
            if first.get("link") in self.links:
                o_id, o_slot, *_ = self.links[first["link"]]
                return self.resolve(o_id, o_slot, seen | {origin_id})
            return _KEEP_WIDGET
        if src.get("mode") == MODE_MUTED:
            return None
        if src.get("mode") == MODE_BYPASS:
            outputs = src.get("outputs") or []
            out_type = outputs[origin_slot].get("type") if 0 <= origin_slot < len(outputs) else None
            for inp in src.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == out_type and inp["link"] in self.links:
                    o_id, o_slot, *_ = self.links[inp["link"]]
                    return self.resolve(o_id, o_slot, seen | {origin_id})
            return None
        return [str(origin_id), origin_slot]


def _id_order(node_id: Any) -> tuple:
    """Numbers in numeric order, then other ids (e.g. a subgraph's "12:5") as text."""
    return (0, node_id, "") if isinstance(node_id, int) else (1, 0, str(node_id))


def to_api(data: Any, registry: NodeRegistry) -> dict[str, Any]:
    """API prompt from either format (a dict of nodes, or a UI workflow)."""
    if is_ui_format(data):
        return ui_to_api(data, registry)
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data:
        return data["prompt"]  # a `POST /prompt` body saved to a file
    if isinstance(data, dict):
        return data
    raise WorkflowError("a workflow must be a JSON object")


# --- PNG metadata -----------------------------------------------------------------------------


def read_png_workflow(path: Path | str) -> dict[str, Any]:
    """The workflow a PNG carries: its `workflow` chunk (UI format) if present, else `prompt`."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            text = dict(getattr(img, "text", {}) or img.info)
    except Exception as exc:
        raise WorkflowError(f"{path}: not a readable image ({exc})") from exc
    for key in ("workflow", "prompt"):
        if key in text:
            try:
                return json.loads(text[key])
            except json.JSONDecodeError as exc:
                raise WorkflowError(f"{path}: its {key!r} chunk is not valid JSON ({exc})") from exc
    raise WorkflowError(f"{path}: this PNG carries no workflow (no 'workflow' or 'prompt' text chunk)")


def shipped_workflows() -> dict[str, Path]:
    """Shipped workflow names → files (`workflows/NAME.json`; API twins end in `.api.json`)."""
    if not WORKFLOWS_DIR.is_dir():
        return {}
    return {
        p.name[: -len(".json")]: p
        for p in sorted(WORKFLOWS_DIR.glob("*.json"))
        if not p.name.endswith(".api.json")
    }


def load_workflow(ref: str | Path) -> dict[str, Any]:
    """Read a workflow from a JSON file, a PNG that carries one, or a shipped workflow's name."""
    path = Path(ref)
    if not path.exists():
        shipped = shipped_workflows()
        if str(ref) in shipped:
            path = shipped[str(ref)]
        else:
            names = ", ".join(shipped) or "none"
            raise WorkflowError(f"no workflow file or shipped workflow named {str(ref)!r} (shipped: {names})")
    if path.suffix.lower() == ".png":
        return read_png_workflow(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"{path}: not a readable JSON workflow ({exc})") from exc


# --- overrides --------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """`NODE.INPUT=VALUE` → ("NODE.INPUT", value); VALUE is parsed as JSON when it can be
    (numbers, true/false, quoted strings), else taken as a plain string."""
    if "=" not in text:
        raise WorkflowError(f"override {text!r} must look like NODE.INPUT=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def apply_overrides(
    prompt: dict[str, Any], overrides: dict[str, Any], registry: NodeRegistry | None = None
) -> dict[str, Any]:
    """Set inputs addressed as `node-id-or-title.input`. A title must name exactly one node. With a
    registry, an input the node type does not declare is an error (validation would ignore it)."""
    # Malformed nodes pass through untouched: validation reports them, naming the node.
    out = {
        nid: {**n, "inputs": dict(n.get("inputs") or {})} if _editable(n) else n for nid, n in prompt.items()
    }
    for key, value in overrides.items():
        target, _, input_name = key.rpartition(".")
        if not target or not input_name:
            raise WorkflowError(f"override {key!r} must be NODE.INPUT (node id or title)")
        if target in out:
            nid = target
        else:
            matches = [i for i, n in out.items() if _title(n) == target]
            if not matches:
                titles = ", ".join(sorted({_title(n) for n in out.values()}))
                raise WorkflowError(
                    f"override {key!r}: no node has id or title {target!r} (titles: {titles})"
                )
            if len(matches) > 1:
                raise WorkflowError(
                    f"override {key!r}: title {target!r} names nodes {', '.join(matches)}; use a node id"
                )
            nid = matches[0]
        if not _editable(out[nid]):
            raise WorkflowError(f"override {key!r}: node {nid} is not a node object with inputs")
        class_type = out[nid].get("class_type")
        d = registry.get(class_type) if registry is not None and isinstance(class_type, str) else None
        if d is not None and d.input(input_name) is None:
            names = ", ".join(i.name for i in d.inputs) or "none"
            raise WorkflowError(
                f"override {key!r}: node {nid} ({d.class_type}) has no input {input_name!r} (inputs: {names})"
            )
        declared = d.input(input_name) if d is not None else None
        out[nid]["inputs"][declared.name if declared is not None else input_name] = value
    return out


def _editable(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("inputs") or {}, dict)


def _title(node: Any) -> str:
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) else ""
