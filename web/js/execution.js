// Follows a run over the websocket (ComfyUI's messages) and shows it on the graph: the queue size,
// the running node with its progress and live previews, cached nodes, output images, and errors
// that name the node.
import { clearPreview, clearRunMarks, setImages, setPreview, setText, stateOf } from "./nodestate.js";
import { shownNode } from "./subgraphs.js";


export class Execution {
  constructor(app) {
    this.app = app;
    this.runningNode = null;
    this.promptId = null;
    this.lastError = null;
  }

  /** The node that shows node `id` of the prompt: a node inside a subgraph ("12:5") shows on
   * its instance. */
  node(id) {
    return shownNode(this.app.graph, id);
  }

  redraw() {
    this.app.graph.setDirtyCanvas(true, true);
  }

  listen() {
    const { api } = this.app;
    const on = (type, fn) => api.addEventListener(type, (e) => fn(e.detail || {}));
    on("status", (d) => this.onStatus(d));
    on("execution_start", (d) => this.onStart(d));
    on("execution_cached", (d) => this.onCached(d));
    on("executing", (d) => this.onExecuting(d));
    on("progress", (d) => this.onProgress(d));
    on("preview", (d) => this.onPreview(d));
    on("executed", (d) => this.onExecuted(d));
    on("execution_error", (d) => this.onError(d));
    on("execution_interrupted", (d) => this.onInterrupted(d));
    on("execution_success", () => {
      const seconds = this.startedAt ? ((performance.now() - this.startedAt) / 1000).toFixed(1) : null;
      this.app.notice(seconds ? `done in ${seconds} s` : "done");
    });
    on("execution_warning", (d) => d.message && this.app.notice(d.message));
    api.addEventListener("disconnected", () => {
      this.lostServer = true;
      this.app.notice("lost the server; reconnecting…", { error: true });
    });
    api.addEventListener("connected", () => {
      if (this.lostServer) this.app.notice("reconnected to the server");
      this.lostServer = false;
      this.app.status?.refresh();
    });
  }

  onStatus(d) {
    const remaining = d?.status?.exec_info?.queue_remaining;
    if (remaining !== undefined) {
      const el = document.getElementById("queue-size");
      el.textContent = `Queue: ${remaining}`;
      el.dataset.size = String(remaining);
    }
  }

  onStart(d) {
    this.promptId = d.prompt_id;
    this.startedAt = performance.now();
    clearRunMarks(this.app.graph);
    this.app.status.setRunning(true);
    this.app.notice("running…");
  }

  onCached(d) {
    for (const id of d.nodes || []) {
      const node = this.node(id);
      if (node) stateOf(node).cached = true;
    }
    this.redraw();
  }

  setRunning(node) {
    if (this.runningNode && this.runningNode !== node) {
      const s = stateOf(this.runningNode);
      s.running = false;
      s.progress = null;
      clearPreview(this.runningNode); // a live preview lasts while its node runs
    }
    this.runningNode = node;
    if (node) stateOf(node).running = true;
    this.redraw();
  }

  onExecuting(d) {
    if (d.node === null || d.node === undefined) {
      this.setRunning(null);
      this.app.status.setRunning(false);
      this.app.status.refresh();
      return;
    }
    this.setRunning(this.node(d.node));
  }

  onProgress(d) {
    const node = this.node(d.node);
    if (!node) return;
    if (node !== this.runningNode) this.setRunning(node);
    stateOf(node).progress = { value: d.value, max: d.max };
    this.redraw();
  }

  /** A live preview: drawn on the sampling node while it runs (a frame that names no node goes
   * to the running one; a late frame of a node that finished is dropped). */
  onPreview(d) {
    const node = d.nodeId === null || d.nodeId === undefined ? this.runningNode : this.node(d.nodeId);
    if (!node || node !== this.runningNode) return;
    if (d.promptId && this.promptId && d.promptId !== this.promptId) return;
    setPreview(node, d.blob);
  }

  onExecuted(d) {
    const node = this.node(d.display_node ?? d.node);
    const images = d.output?.images || [];
    if (node && images.length) setImages(node, images.map((img) => this.app.api.viewUrl(img)));
    if (node && Array.isArray(d.output?.text)) setText(node, d.output.text);
    this.redraw();
  }

  onError(d) {
    const node = this.node(d.node_id);
    const where =
      d.node_id === null || d.node_id === undefined
        ? "the prompt"
        : `${d.node_title || d.node_type || "node"} (#${d.node_id}, ${d.node_type})`;
    const message = d.exception_message || "unknown error";
    if (node) stateOf(node).error = { message, inputs: [] };
    const trace = Array.isArray(d.traceback) ? d.traceback.join("") : d.traceback || "";
    const details = `${where}\n${d.exception_type || ""}: ${message}\n\n${trace}`;
    this.lastError = { where, message, details };
    this.app.notice(`Error in ${where}: ${message}`, { error: true, details });
    this.setRunning(null);
    this.app.status.setRunning(false);
  }

  onInterrupted(d) {
    this.setRunning(null);
    this.app.status.setRunning(false);
    this.app.notice(`interrupted${d.node_id ? ` in node #${d.node_id}` : ""}`);
  }

  /** A 400 from POST /prompt: mark each offending node and input, list them all in the panel. */
  showValidationErrors(body) {
    const lines = [];
    const nodeErrors = body.node_errors || {};
    for (const [id, entry] of Object.entries(nodeErrors)) {
      const node = this.node(id);
      const errors = entry.errors || [];
      const inputs = errors.map((e) => e.extra_info?.input_name).filter(Boolean);
      const first = errors[0];
      const message = first ? `${first.message}${first.details ? `: ${first.details}` : ""}` : "invalid";
      if (node) stateOf(node).error = { message, inputs };
      const title = node?.title || entry.class_type || `node ${id}`;
      for (const e of errors) lines.push(`${title} (#${id}): ${e.message}${e.details ? ` — ${e.details}` : ""}`);
    }
    const head = body.error?.message || "Prompt is invalid";
    const detailsHead = body.error?.details ? `${head}: ${body.error.details}` : head;
    const count = Object.keys(nodeErrors).length;
    const summary = count ? `${head} (${count} node${count > 1 ? "s" : ""}: ${lines[0]})` : detailsHead;
    this.app.notice(summary, { error: true, details: [detailsHead, ...lines].join("\n") });
    this.redraw();
  }
}
