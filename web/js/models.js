// After a workflow loads: combos whose saved value is not available on this machine (a model not
// installed, an input image not present) are marked, and on a machine that only has the demo
// model the model loaders are pointed at it, so the first Ctrl+Enter makes an image. Whether only
// the demo model is installed is the server's one rule (`/system_stats` → fluxloom.demo_only,
// from nodes/flux/provider.py); the canvas never guesses it from the choices.
import { stateOf } from "./nodestate.js";

export const DEMO_MODEL = "fluxloom-demo";

function demoChoice(values) {
  return values.find((v) => String(v).includes(DEMO_MODEL));
}

/** Returns one note per changed or missing value: {node, badge, text, demo?, missing?}. */
export function checkAvailableChoices(graph, stats) {
  const notes = [];
  const demoOnly = Boolean(stats?.fluxloom?.demo_only);
  for (const node of graph._nodes) {
    const s = stateOf(node);
    s.note = null;
    for (const widget of node.widgets || []) {
      if (widget.fluxSpec?.kind !== "COMBO") continue;
      const values = widget.options.values || [];
      if (values.includes(widget.value)) continue;
      const missing = widget.value;
      const demo = demoChoice(values);
      const onlyDemo = demo !== undefined && demoOnly;
      if (onlyDemo) {
        widget.value = demo;
        s.note = { badge: "demo model", text: `was ${missing} (not installed)`, demo: true, missing, widget: widget.name };
      } else {
        const choices = values.length ? values.join(", ") : "none found";
        s.note = {
          badge: "missing",
          text: `${widget.name} "${missing}" is not available; choose: ${choices}`,
          widget: widget.name,
        };
      }
      notes.push({ node: node.title, ...s.note });
    }
  }
  graph.setDirtyCanvas(true, true);
  return notes;
}

/** One line for the notice bar: the demo switch said once, other missing values listed. */
export function summarizeNotes(notes) {
  const demo = notes.filter((n) => n.demo);
  const other = notes.filter((n) => !n.demo);
  const parts = [];
  if (demo.length) {
    const was = [...new Set(demo.map((n) => n.missing))].join(", ");
    parts.push(`Only the demo model is installed: ${demo.length} loader(s) use ${DEMO_MODEL} instead of ${was} — its images are noise`);
  }
  for (const n of other) parts.push(`${n.node}: ${n.text}`);
  return parts.join(" · ");
}
