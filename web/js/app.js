// The canvas application: registers node types from the server, shows the graph, queues it,
// follows execution over the websocket, and moves workflows in and out.
import { createBounds, LGraph, LGraphCanvas, LiteGraph } from "@comfyorg/litegraph";
import { Api, ApiError } from "./api.js";
import { applyTypeColors } from "./colors.js";
import { bindDrop, bindKeys, bindToolbar } from "./controls.js";
import { Execution } from "./execution.js";
import { checkAvailableChoices, summarizeNotes } from "./models.js";
import { clearRunMarks, stateOf } from "./nodestate.js";
import { registerNodeTypes, services } from "./nodetypes.js";
import { registerNoteTypes } from "./notes.js";
import { StatusLine } from "./status.js";
import { enableSubgraphs, unknownTypes } from "./subgraphs.js";
import { applyControl } from "./widgets.js";
import {
  DEFAULT_WORKFLOW,
  lastGraph,
  readWorkflowFile,
  storeLastGraph,
  unwrapWorkflow,
  workflowNames,
} from "./workflows.js";

const $ = (id) => document.getElementById(id);

function configureLiteGraph() {
  LiteGraph.release_link_on_empty_shows_menu = true;
  LiteGraph.search_filter_enabled = false;
  LiteGraph.search_hide_on_mouse_leave = false;
  LiteGraph.search_show_all_on_open = true;
  LiteGraph.alt_drag_do_clone_nodes = true;
  LiteGraph.snaps_for_comfy = true;
  LiteGraph.catch_exceptions = true;
  // Node menu → Mode: the modes the server understands, at their litegraph numbers (0 always,
  // 2 never = muted, 4 bypass, as ComfyUI); event modes 1 and 3 mean nothing here.
  LiteGraph.NODE_MODES = ["Always", null, "Mute", null, "Bypass"];
}

export class App {
  constructor() {
    this.api = new Api();
    this.objectInfo = {};
    this.graph = null;
    this.canvas = null;
    this.status = null;
    this.execution = null;
    this.notes = [];
    this.workflowList = [];
    this.currentName = "workflow"; // offered as the file name when saving
  }

  async start() {
    configureLiteGraph();
    this.objectInfo = await this.api.objectInfo();
    this.nodeTypes = registerNodeTypes(this.objectInfo);
    registerNoteTypes();
    services.upload = (file) => this.upload(file);
    this.graph = new LGraph();
    enableSubgraphs(this.graph);
    this.canvas = new LGraphCanvas($("graph-canvas"), this.graph);
    applyTypeColors(this.canvas);
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    // Whole FLUX graphs fit the screen at about half scale; keep titles and widgets readable there.
    this.canvas.low_quality_zoom_threshold = 0.35;
    // A workflow's subgraphs show as one node each and run (the server inlines them); making or
    // editing subgraphs on this canvas is not offered, so keep the menus to what works.
    this.canvas.getMenuOptions = () => [
      { content: "Add Node", has_submenu: true, callback: LGraphCanvas.onMenuAdd },
      { content: "Add Group", callback: LGraphCanvas.onGroupAdd },
    ];
    const nodeMenu = this.canvas.getNodeMenuOptions.bind(this.canvas);
    this.canvas.getNodeMenuOptions = (node) =>
      nodeMenu(node).filter((option) => !String(option?.content ?? "").includes("Subgraph"));
    this.fitCanvas();
    window.addEventListener("resize", () => this.fitCanvas());

    this.status = new StatusLine(this.api, $("status-line"));
    this.execution = new Execution(this);
    this.execution.listen();
    bindToolbar(this);
    bindKeys(this);
    bindDrop(this);
    document.addEventListener("fluxloom:open-image", (e) => this.openImage(e.detail.url));
    this.api.connect();

    await this.status.refresh();
    this.status.schedule();
    await this.refreshWorkflowMenu();
    await this.loadInitial();
    // Keep the last graph across reloads (as ComfyUI does).
    setInterval(() => this.persist(), 2000);
    window.addEventListener("beforeunload", () => this.persist());
  }

  fitCanvas() {
    const wrap = $("canvas-wrap");
    this.canvas.resize(wrap.clientWidth, wrap.clientHeight);
    this.canvas.setDirty(true, true);
  }

  // --- notices and panels ------------------------------------------------------------------

  notice(text, { error = false, details = null } = {}) {
    this.noticeSeq = (this.noticeSeq || 0) + 1;
    const el = $("notice");
    el.textContent = text;
    el.className = error ? "error" : "";
    el.title = details ? "click to read the full error" : text;
    el.onclick = details ? () => this.showError(text, details) : null;
  }

  showError(title, body) {
    $("error-title").textContent = title;
    $("error-body").textContent = body;
    $("error-panel").hidden = false;
  }

  openImage(url) {
    $("lightbox-img").src = url;
    $("lightbox").hidden = false;
  }

  // --- graph in and out ---------------------------------------------------------------------

  serialize() {
    return this.graph.serialize();
  }

  /** Replace the graph with a UI workflow; unknown node types are reported, not fatal. */
  async loadWorkflow(workflow, source = "workflow", { fit = false } = {}) {
    const missing = unknownTypes(workflow);
    this.graph.configure(structuredClone(workflow));
    if (source !== "last graph") this.currentName = String(source).replace(/\.(json|png)$/i, "");
    clearRunMarks(this.graph);
    this.placeView(workflow.extra?.ds, fit);
    const stats = this.status.stats || (await this.status.refresh());
    this.notes = checkAvailableChoices(this.graph, stats);
    if (missing.length) {
      this.notice(`${source}: unknown node types ${missing.join(", ")}`, { error: true });
    } else if (this.notes.length) {
      const details = this.notes.map((n) => `${n.node}: ${n.text}`).join("\n");
      this.notice(summarizeNotes(this.notes), { details });
    } else {
      this.notice(`opened ${source}`);
    }
    this.canvas.setDirty(true, true);
    this.persist();
  }

  /** Restore the saved viewport, or fit the whole graph in view (shipped workflows, no viewport). */
  placeView(ds, fit) {
    if (ds && !fit && Array.isArray(ds.offset) && ds.scale > 0) {
      this.canvas.ds.offset = [...ds.offset];
      this.canvas.ds.scale = ds.scale;
      return;
    }
    const bounds = createBounds([...this.graph._nodes, ...this.graph._groups], 30);
    if (bounds) this.canvas.ds.fitToBounds(bounds, { zoom: 0.95 });
  }

  async loadInitial() {
    const last = lastGraph();
    if (last) {
      try {
        await this.loadWorkflow(last, "last graph");
        return;
      } catch (err) {
        this.notice(`could not reopen the last graph (${err.message}); opening the default`, { error: true });
      }
    }
    if (!this.workflowList.includes(DEFAULT_WORKFLOW)) {
      this.notice(`the server has no ${DEFAULT_WORKFLOW} workflow; add nodes with a double click`);
      return;
    }
    try {
      await this.loadServerWorkflow(DEFAULT_WORKFLOW);
    } catch (err) {
      this.notice(`default workflow ${DEFAULT_WORKFLOW} not available (${err.message})`, { error: true });
    }
  }

  async loadServerWorkflow(name) {
    const body = await this.api.getWorkflow(name);
    await this.loadWorkflow(unwrapWorkflow(body), name, { fit: true });
  }

  persist() {
    if (this.graph) storeLastGraph(this.serialize());
  }

  async refreshWorkflowMenu() {
    const menu = $("workflow-menu");
    let names = [];
    try {
      names = workflowNames(await this.api.listWorkflows());
    } catch (err) {
      this.notice(`could not list server workflows (${err.message})`, { error: true });
    }
    this.workflowList = names;
    menu.replaceChildren(new Option("Server workflows…", ""), ...names.map((n) => new Option(n, n)));
  }

  async openFile(file) {
    try {
      await this.loadWorkflow(await readWorkflowFile(file), file.name);
    } catch (err) {
      this.notice(err.message, { error: true, details: err.message });
    }
  }

  // --- queueing ----------------------------------------------------------------------------

  async queue() {
    // The server converts the UI workflow (server/workflow_io.py): one converter for the
    // canvas, `fluxloom run` and saved workflows, and the PNG keeps the workflow as it was.
    const workflow = this.serialize();
    clearRunMarks(this.graph);
    const seq = this.noticeSeq;
    try {
      const result = await this.api.queuePrompt(workflow);
      const warnings = result.warnings || [];
      // A quick prompt may already have run (and said so) before this answer arrived.
      if (this.noticeSeq === seq) {
        this.notice(`queued prompt ${result.number ?? ""}${warnings.length ? ` · ${warnings.join(" · ")}` : ""}`);
      }
      this.applySeedControls();
      this.persist();
      return result;
    } catch (err) {
      if (err instanceof ApiError && err.body && typeof err.body === "object" && err.body.error) {
        this.execution.showValidationErrors(err.body);
      } else {
        this.notice(`queueing failed: ${err.message}`, { error: true, details: String(err.stack || err) });
      }
      return null;
    }
  }

  /** Re-read `/object_info` so combos list models and images added since the page opened. */
  async refreshChoices() {
    try {
      this.objectInfo = await this.api.objectInfo();
    } catch (err) {
      this.notice(`could not refresh from the server: ${err.message}`, { error: true });
      return;
    }
    for (const node of this.graph._nodes) {
      const info = this.objectInfo[node.type];
      for (const widget of node.widgets || []) {
        if (widget.fluxSpec?.kind !== "COMBO") continue;
        const spec = info?.input?.required?.[widget.name] ?? info?.input?.optional?.[widget.name];
        if (Array.isArray(spec?.[0])) widget.options.values = spec[0].slice();
      }
    }
    this.notes = checkAvailableChoices(this.graph, await this.status.refresh());
    this.notice(this.notes.length ? summarizeNotes(this.notes) : "refreshed the lists of models and images");
  }

  async upload(file) {
    try {
      const result = await this.api.uploadImage(file);
      this.notice(`uploaded ${result.name}`);
      return result;
    } catch (err) {
      this.notice(`upload of ${file.name} failed: ${err.message}`, { error: true });
      return null;
    }
  }

  applySeedControls() {
    for (const node of this.graph._nodes) {
      for (const w of node.widgets || []) if (w.fluxControl) applyControl(w);
    }
    this.graph.setDirtyCanvas(true, true);
  }
}

const app = new App();
// A small hook for tests and for the curious: read-only access to the live objects.
window.fluxloom = { app, stateOf, LiteGraph, ready: false };
app
  .start()
  .then(() => {
    window.fluxloom.graph = app.graph;
    window.fluxloom.canvas = app.canvas;
    window.fluxloom.ready = true;
    document.body.dataset.ready = "true";
  })
  .catch((err) => {
    console.error("fluxloom failed to start", err);
    app.notice?.(`fluxloom failed to start: ${err.message}`, { error: true });
    document.getElementById("status-line").textContent = `fluxloom failed to start: ${err.message}`;
    document.body.dataset.ready = "failed";
  });
