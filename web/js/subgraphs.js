// ComfyUI subgraphs on the canvas, with litegraph's own support (0.17): a workflow's
// `definitions.subgraphs` become Subgraph objects when the graph is configured, and each one is
// registered here as a node type (its id), so that an instance shows as one node with the
// definition's inputs, outputs and promoted widgets. Serializing keeps the instances and the
// definitions they use; the server inlines them when the workflow is queued (server/subgraphs.py),
// naming inner nodes "instance:inner". Opening a subgraph to edit it is not offered.
import { LiteGraph, SubgraphNode } from "@comfyorg/litegraph";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// The types registered for the open workflow's definitions: replaced when another one opens.
const registered = new Set();

/** A node type for one subgraph definition. */
function subgraphNodeClass(rootGraph, subgraph) {
  class SubgraphInstance extends SubgraphNode {
    static title = subgraph.name;
    static description = "a subgraph: its nodes run inside this one";
    // Not in the Add Node menu: an instance comes with its workflow.
    static skip_list = true;

    constructor() {
      // The placeholder instance data is replaced by the saved instance when the graph
      // configures the node; `add` then gives it the graph it really sits in.
      super(rootGraph, subgraph, {
        id: -1,
        type: subgraph.id,
        pos: [0, 0],
        size: [240, 80],
        inputs: [],
        outputs: [],
        flags: {},
        mode: 0,
        order: 0,
        properties: {},
      });
      this.serialize_widgets = true;
      // litegraph's "enter subgraph" title button opens the inner graph, which this canvas has
      // no way back from; the instance stays one node.
      this.title_buttons = [];
    }

    /** Modes the server runs: 0 (always), 2 (muted) and 4 (bypassed), as for other nodes. */
    changeMode(mode) {
      if (![0, 2, 4].includes(mode)) return false;
      this.mode = mode;
      this.setDirtyCanvas(true, true);
      return true;
    }
  }
  return SubgraphInstance;
}

/** Register a node type for each subgraph definition the graph creates (when it is configured). */
export function enableSubgraphs(graph) {
  graph.events.addEventListener("configuring", () => {
    for (const id of registered) {
      if (LiteGraph.registered_node_types[id]) LiteGraph.unregisterNodeType(id);
    }
    registered.clear();
  });
  graph.events.addEventListener("subgraph-created", (e) => {
    const { subgraph } = e.detail;
    LiteGraph.registerNodeType(subgraph.id, subgraphNodeClass(graph, subgraph));
    registered.add(subgraph.id);
  });
}

/** The node types of a workflow that this canvas cannot show: not registered, and not one of
 * the workflow's subgraph definitions; their nodes too (a definition's unknown inner types). */
export function unknownTypes(workflow) {
  const definitions = workflow.definitions?.subgraphs || [];
  const defined = new Set(definitions.map((d) => d.id));
  const unknown = new Set();
  for (const graph of [workflow, ...definitions]) {
    for (const node of graph.nodes || []) {
      const type = String(node.type);
      if (!defined.has(type) && !LiteGraph.registered_node_types[type]) unknown.add(type);
    }
  }
  return [...unknown].map((type) => (UUID.test(type) ? `${type} (a subgraph whose definition is missing)` : type));
}

/** The node on the root graph that shows an executing node: itself, or for a node inside a
 * subgraph ("12:5", nested "12:3:5") the instance it runs in. */
export function shownNode(graph, id) {
  if (id === null || id === undefined) return null;
  const direct = graph.getNodeById(Number(id)) ?? graph.getNodeById(id);
  if (direct) return direct;
  const outer = String(id).split(":")[0];
  return outer === String(id) ? null : (graph.getNodeById(Number(outer)) ?? graph.getNodeById(outer) ?? null);
}
