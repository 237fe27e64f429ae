// ComfyUI's note nodes (`Note`, `MarkdownNote`): text on the canvas, never sent to run (the server
// skips them as frontend-only nodes, server/workflow_io.py). ComfyUI's templates carry them
// (model links, instructions), so a dropped template opens with its notes readable.
import { LGraphNode, LiteGraph } from "@comfyorg/litegraph";
import { addWidgetForSpec } from "./widgets.js";

const NOTE_TYPES = {
  Note: "a note: text kept with the workflow",
  MarkdownNote: "a note in Markdown (shown as plain text here)",
};

function noteClass(type, description) {
  class NoteNode extends LGraphNode {
    static title = type === "Note" ? "Note" : "Markdown Note";
    static description = description;

    constructor(title) {
      super(title);
      this.isVirtualNode = true;
      this.serialize_widgets = true;
      this.color = "#432";
      this.bgcolor = "#653";
      addWidgetForSpec(this, "text", ["STRING", { multiline: true, default: "" }]);
      this.size = [400, 160];
    }
  }
  NoteNode.category = "utils";
  return NoteNode;
}

/** Register the note types the server does not offer itself. */
export function registerNoteTypes() {
  for (const [type, description] of Object.entries(NOTE_TYPES)) {
    if (LiteGraph.registered_node_types[type]) continue;
    LiteGraph.registerNodeType(type, noteClass(type, description));
    LiteGraph.registered_node_types[type].category = "utils";
  }
}
