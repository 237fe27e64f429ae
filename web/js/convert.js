// UI workflow (litegraph's serialized graph) → API prompt, by the same rules as the server's
// `server/workflow_io.py` `ui_to_api`, so a graph queued from the canvas and the same workflow
// run headlessly execute identically: widget values in declared widget order (the seed's
// control value right after the seed), links → [source_id, slot], muted nodes dropped,
// bypassed nodes pass their first input of the same type through, titles in `_meta.title`.
import { CONTROL_VALUES, isWidgetSpec } from "./widgets.js";

const MODE_MUTED = 2;
const MODE_BYPASS = 4;

/** Declared widget inputs of a class: [{name, control}] in order. */
export function widgetNames(info) {
  const out = [];
  for (const group of ["required", "optional"]) {
    const specs = info?.input?.[group] || {};
    for (const name of info?.input_order?.[group] || Object.keys(specs)) {
      const spec = specs[name];
      if (spec && isWidgetSpec(spec)) {
        out.push({ name, control: spec[0] === "INT" && Boolean(spec[1]?.control_after_generate) });
      }
    }
  }
  return out;
}

function linksById(workflow) {
  const links = new Map();
  for (const link of workflow.links || []) {
    if (Array.isArray(link) && link.length >= 5) {
      links.set(link[0], { originId: link[1], originSlot: link[2], type: link[5] ?? "*" });
    } else if (link && typeof link === "object") {
      links.set(link.id, { originId: link.origin_id, originSlot: link.origin_slot, type: link.type ?? "*" });
    }
  }
  return links;
}

function widgetInputs(node, info) {
  const inputs = {};
  const values = node.widgets_values;
  if (values && !Array.isArray(values) && typeof values === "object") {
    for (const { name } of widgetNames(info)) if (name in values) inputs[name] = values[name];
    return inputs;
  }
  if (!Array.isArray(values)) return inputs;
  let i = 0;
  for (const { name, control } of widgetNames(info)) {
    if (i >= values.length) break;
    inputs[name] = values[i++];
    if (control && i < values.length && CONTROL_VALUES.includes(values[i])) i++;
  }
  return inputs;
}

export function workflowToPrompt(workflow, objectInfo) {
  const links = linksById(workflow);
  const nodes = new Map((workflow.nodes || []).map((n) => [n.id, n]));

  function resolve(originId, originSlot, seen = new Set()) {
    const src = nodes.get(originId);
    if (!src || src.mode === MODE_MUTED || seen.has(originId)) return null;
    if (src.mode === MODE_BYPASS) {
      const outType = src.outputs?.[originSlot]?.type;
      for (const inp of src.inputs || []) {
        const link = inp.link != null ? links.get(inp.link) : undefined;
        if (link && inp.type === outType) return resolve(link.originId, link.originSlot, new Set([...seen, originId]));
      }
      return null;
    }
    return [String(originId), originSlot];
  }

  const prompt = {};
  const ids = [...nodes.keys()].sort((a, b) => a - b);
  for (const id of ids) {
    const node = nodes.get(id);
    if (node.mode === MODE_MUTED || node.mode === MODE_BYPASS) continue;
    const info = objectInfo[node.type];
    const inputs = info ? widgetInputs(node, info) : {};
    for (const inp of node.inputs || []) {
      const link = inp.link != null ? links.get(inp.link) : undefined;
      if (!link) continue;
      const source = resolve(link.originId, link.originSlot);
      if (source) inputs[inp.name] = source;
      else delete inputs[inp.name];
    }
    const title = node.title || info?.display_name || node.type;
    prompt[String(id)] = { class_type: node.type, inputs, _meta: { title } };
  }
  return prompt;
}
