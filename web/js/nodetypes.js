// Node classes generated from `GET /object_info`: one litegraph class per `class_type`, with
// typed sockets, widgets from the specs, and the run-state drawing shared by every node.
import { LGraphNode, LiteGraph } from "@comfyorg/litegraph";
import { drawNodeState, nodeMouseDown } from "./nodestate.js";
import { addUploadButton, addWidgetForSpec, isWidgetSpec } from "./widgets.js";

// Set by the app: uploads a file to the server's input folder (used by image combos).
export const services = { upload: async () => null };

/** Inputs in declared order (`input_order` when the server sends it). */
function orderedInputs(info) {
  const out = [];
  for (const group of ["required", "optional"]) {
    const specs = info.input?.[group] || {};
    const order = info.input_order?.[group] || Object.keys(specs);
    for (const name of order) {
      if (specs[name]) out.push({ name, spec: specs[name], optional: group === "optional" });
    }
  }
  return out;
}

// Widget kinds that a link may feed instead of the widget (as in ComfyUI): an INT output can
// drive a seed, a STRING output a prompt. litegraph draws such a socket on the widget's left edge
// while a link is dragged, and disables the widget while it is connected.
const LINKABLE = new Set(["INT", "FLOAT", "STRING", "BOOLEAN"]);

function addWidgetSockets(node) {
  for (const widget of node.widgets || []) {
    const kind = widget.fluxSpec?.kind;
    if (!LINKABLE.has(kind)) continue;
    if (node.inputs?.some((slot) => slot.widget?.name === widget.name || slot.name === widget.name)) continue;
    node.addInput(widget.name, kind, { widget: { name: widget.name } });
  }
}

function defineNodeClass(name, info) {
  const inputs = orderedInputs(info);

  class FluxloomNode extends LGraphNode {
    static title = info.display_name || name;
    static comfyClass = name;
    static nodeData = info;

    constructor(title) {
      super(title);
      this.serialize_widgets = true;
      this.fluxInfo = info;
      for (const { name: inputName, spec } of inputs) {
        if (isWidgetSpec(spec)) {
          addWidgetForSpec(this, inputName, spec);
        } else {
          const slot = this.addInput(inputName, spec[0]);
          if (spec[1]?.tooltip) slot.tooltip = spec[1].tooltip;
        }
      }
      addWidgetSockets(this);
      // Buttons go last: litegraph indexes widgets_values by widget position.
      for (const w of this.widgets || []) {
        if (w.fluxSpec?.options?.image_upload) addUploadButton(this, w, (file) => services.upload(file));
      }
      (info.output || []).forEach((type, i) => {
        this.addOutput(info.output_name?.[i] || type, type);
      });
      const [w, h] = this.computeSize();
      this.size = [Math.max(w, 240), h];
      // litegraph sets its own onMouseDown (title buttons) on each instance; chain ours first.
      const base = this.onMouseDown;
      this.onMouseDown = (e, pos, canvas) => nodeMouseDown(this, e, pos) || Boolean(base?.(e, pos, canvas));
    }

    onConfigure() {
      // Workflows saved elsewhere (or before widget sockets) lack them: add them after the saved
      // inputs, so the saved links' slot numbers stay valid.
      addWidgetSockets(this);
    }

    /** litegraph refuses mode 4; the server runs 0 (always), 2 (muted) and 4 (bypassed). */
    changeMode(mode) {
      if (![0, 2, 4].includes(mode)) return false;
      this.mode = mode;
      this.setDirtyCanvas(true, true);
      return true;
    }

    onDrawForeground(ctx) {
      drawNodeState(this, ctx);
    }
  }

  FluxloomNode.category = info.category || "other";
  FluxloomNode.description = info.description || "";
  return FluxloomNode;
}

/** Register (or re-register) every node type the server offers; returns their names. */
export function registerNodeTypes(objectInfo) {
  const names = Object.keys(objectInfo);
  for (const name of names) {
    const cls = defineNodeClass(name, objectInfo[name]);
    LiteGraph.registerNodeType(name, cls);
    // registerNodeType derives the category from a "path/name" type; ours are plain class_types.
    cls.category = objectInfo[name].category || "other";
  }
  return names;
}
