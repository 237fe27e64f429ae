"""Helpers that find things on the <canvas> (through the page's `window.fluxloom` hook) so that
tests can point the real mouse at them: slots, widgets, empty space."""

from __future__ import annotations

import base64
from typing import Any

# Graph coordinates → page coordinates, through litegraph's own transform.
_TO_PAGE = """
function toPage([x, y]) {
  const c = window.fluxloom.canvas;
  const [cx, cy] = c.ds.convertOffsetToCanvas([x, y]);
  const r = c.canvas.getBoundingClientRect();
  return [r.left + cx, r.top + cy];
}
"""


def evaluate(page, body: str, arg: Any = None) -> Any:
    return page.evaluate(f"(arg) => {{ {_TO_PAGE} {body} }}", arg)


def graph_state(page) -> dict:
    """The graph as the canvas would save it."""
    return page.evaluate("JSON.parse(JSON.stringify(window.fluxloom.app.serialize()))")


def nodes_of_type(page, class_type: str) -> list[int]:
    return evaluate(
        page,
        "return window.fluxloom.graph._nodes.filter(n => n.type === arg).map(n => n.id);",
        class_type,
    )


def slot_point(page, node_id: int, name: str, is_input: bool) -> tuple[float, float]:
    return tuple(
        evaluate(
            page,
            """
            const n = window.fluxloom.graph.getNodeById(arg.id);
            const slots = arg.input ? n.inputs : n.outputs;
            const i = slots.findIndex(s => s.name === arg.name);
            if (i < 0) throw new Error(`no slot ${arg.name} on node ${arg.id}`);
            return toPage(n.getConnectionPos(arg.input, i));
            """,
            {"id": node_id, "name": name, "input": is_input},
        )
    )


def widget_point(page, node_id: int, name: str, where: str = "middle") -> tuple[float, float]:
    """A point on a widget: "middle" (opens the editor) or "right"/"left" (the arrows)."""
    return tuple(
        evaluate(
            page,
            """
            const n = window.fluxloom.graph.getNodeById(arg.id);
            const w = n.widgets.find(w => w.name === arg.name);
            if (!w) throw new Error(`no widget ${arg.name} on node ${arg.id}`);
            const h = (w.computedHeight ?? 24) - 4;
            const x = arg.where === "right" ? n.size[0] - 22 : arg.where === "left" ? 22 : n.size[0] / 2;
            return toPage([n.pos[0] + x, n.pos[1] + w.y + h / 2]);
            """,
            {"id": node_id, "name": name, "where": where},
        )
    )


def node_point(page, node_id: int, fx: float = 0.5, fy: float = 0.9) -> tuple[float, float]:
    """A point inside a node's body, as fractions of its size."""
    return tuple(
        evaluate(
            page,
            """
            const n = window.fluxloom.graph.getNodeById(arg.id);
            return toPage([n.pos[0] + n.size[0] * arg.fx, n.pos[1] + n.size[1] * arg.fy]);
            """,
            {"id": node_id, "fx": fx, "fy": fy},
        )
    )


def empty_point(page) -> tuple[float, float]:
    """A point on the canvas with no node or group under it."""
    return tuple(
        evaluate(
            page,
            """
            const c = window.fluxloom.canvas, g = window.fluxloom.graph;
            const r = c.canvas.getBoundingClientRect();
            for (let y = r.top + 40; y < r.bottom - 40; y += 37) {
              for (let x = r.left + 40; x < r.right - 200; x += 41) {
                const [gx, gy] = c.ds.convertCanvasToOffset([x - r.left, y - r.top]);
                const hitNode = g._nodes.some(n => gx > n.pos[0] - 40 && gx < n.pos[0] + n.size[0] + 40
                  && gy > n.pos[1] - 60 && gy < n.pos[1] + n.size[1] + 40);
                const hitGroup = g._groups.some(gr => gx > gr.pos[0] - 20 && gx < gr.pos[0] + gr.size[0] + 20
                  && gy > gr.pos[1] - 20 && gy < gr.pos[1] + gr.size[1] + 20);
                if (!hitNode && !hitGroup) return [x, y];
              }
            }
            throw new Error("no empty spot on the canvas");
            """,
        )
    )


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
    page.mouse.move(*end, steps=5)
    page.mouse.up()


def load_workflow(page, workflow: dict) -> None:
    """Open a workflow as the Load button would (used to set up a scene, not to test loading)."""
    page.evaluate("(wf) => window.fluxloom.app.loadWorkflow(wf, 'test')", workflow)


def empty_graph(page) -> None:
    page.evaluate("window.fluxloom.graph.clear(); window.fluxloom.canvas.setDirty(true, true)")


def widget_value(page, node_id: int, name: str) -> Any:
    return evaluate(
        page,
        "return window.fluxloom.graph.getNodeById(arg.id).widgets.find(w => w.name === arg.name).value;",
        {"id": node_id, "name": name},
    )


def link_count(page) -> int:
    return page.evaluate("window.fluxloom.graph._links.size")


def input_link(page, node_id: int, name: str) -> dict | None:
    """The link feeding an input: {origin, origin_slot, type}, or None."""
    return evaluate(
        page,
        """
        const g = window.fluxloom.graph;
        const id = g.getNodeById(arg.id).inputs.find(i => i.name === arg.name).link;
        const l = id == null ? null : g._links.get(id);
        return l ? { origin: l.origin_id, origin_slot: l.origin_slot, type: l.type } : null;
        """,
        {"id": node_id, "name": name},
    )


def drop_file(page, name: str, mime: str, data: bytes) -> None:
    """Drop a file on the canvas the way a browser does: dragover then drop with a DataTransfer."""
    transfer = page.evaluate_handle(
        """([name, mime, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            return dt;
        }""",
        [name, mime, base64.b64encode(data).decode()],
    )
    page.dispatch_event("#graph-canvas", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#graph-canvas", "drop", {"dataTransfer": transfer})
