// fluxloom's extension for the official ComfyUI frontend (`fluxloom serve --frontend comfyui`),
// listed by /api/extensions and loaded like a custom node's web directory. Inside that frontend
// it shows what fluxloom's own canvas shows:
// - the model manager's status (device, free memory, the models it holds, and their moves:
//   loaded / offloaded / released), polled from /system_stats — quickly while a prompt runs, so
//   the two memory phases are visible;
// - the demo-model notice (only the tiny random model is installed: images are noise);
// - fluxloom's `execution_warning` messages (e.g. "model X is not installed; using the demo
//   model"), which the frontend does not know, as toasts;
// - which phase group of a two-phase workflow is running, drawn over the canvas without
//   changing the workflow;
// - a new page opens fluxloom's default workflow rather than the frontend's own default graph.
// Live previews need nothing here: the official frontend draws ComfyUI's binary preview frames
// itself.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const IDLE_POLL_MS = 5000;
const RUNNING_POLL_MS = 500;
const HISTORY = 6; // model moves shown
const PHASES = [
  { match: /^phase 1\b/i, colour: "#3f789e", label: "phase 1 (encode)" },
  { match: /^phase 2\b/i, colour: "#88aa88", label: "phase 2 (sample + decode)" },
];

function gib(bytes) {
  return `${(bytes / 2 ** 30).toFixed(bytes >= 10 * 2 ** 30 ? 0 : 1)} GiB`;
}

function mib(bytes) {
  return bytes >= 2 ** 30 ? gib(bytes) : `${(bytes / 2 ** 20).toFixed(bytes >= 10 * 2 ** 20 ? 0 : 1)} MiB`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** The models the manager holds, keyed by kind and name (a model moves, its key stays). */
function held(stats) {
  const out = new Map();
  for (const m of stats?.fluxloom?.loaded || []) {
    if (m.location !== "none") out.set(`${m.kind}:${m.name}`, m);
  }
  return out;
}

/** What changed between two /system_stats answers: ["T5 released", "FLUX_MODEL loaded", ...]. */
export function modelMoves(before, after) {
  const was = held(before);
  const now = held(after);
  const moves = [];
  for (const [key, m] of was) {
    const n = now.get(key);
    if (!n) moves.push(`${m.kind} released`);
    else if (n.location !== m.location) moves.push(`${m.kind} ${n.location === "device" ? "back on device" : "offloaded"}`);
  }
  for (const [key, m] of now) if (!was.has(key)) moves.push(`${m.kind} loaded`);
  return moves;
}

function toast(kind, summary, detail, life = 10000) {
  const t = app.extensionManager?.toast;
  if (!t) return;
  if (typeof t[kind] === "function") t[kind](summary, { description: detail, duration: life });
  else t.add({ severity: kind === "warning" ? "warn" : kind, summary, detail, life });
}

class StatusPanel {
  constructor() {
    this.element = el("div", { id: "fluxloom-status", role: "status", "aria-live": "polite" });
    this.stats = null;
    this.moves = [];
    this.phase = null;
    this.warnings = []; // execution_warning messages of the current (or last) prompt
    this.phases = []; // the phases the current (or last) prompt went through, in order
    this.running = false;
    this.timer = null;
    this.demoAnnounced = false;
    document.body.append(this.element);
  }

  /** Refresh now unless a refresh is already on its way (called as each node starts). */
  refreshSoon() {
    if (!this.inFlight) this.inFlight = this.refresh().finally(() => (this.inFlight = null));
  }

  async refresh() {
    try {
      const res = await api.fetchApi("/system_stats", { cache: "no-store" });
      const stats = await res.json();
      if (this.stats) this.moves = [...this.moves, ...modelMoves(this.stats, stats)].slice(-HISTORY);
      this.stats = stats;
      this.render();
      this.announceDemo();
    } catch (err) {
      this.element.textContent = `fluxloom: server unreachable (${err.message})`;
    }
  }

  announceDemo() {
    if (this.demoAnnounced || !this.stats?.fluxloom?.demo_only) return;
    this.demoAnnounced = true;
    toast(
      "warning",
      "fluxloom: demo model only",
      "No FLUX model is installed, so every loader uses the tiny random demo model: images are noise. " +
        "Put a FLUX.1 pipeline folder under models/diffusers/ to make real images.",
    );
  }

  render() {
    const stats = this.stats;
    const dev = stats?.devices?.[0];
    const flux = stats?.fluxloom || {};
    const parts = [el("b", { class: "fluxloom-device" }, `fluxloom · ${flux.device || dev?.name || "unknown device"}`)];
    if (dev?.vram_total && dev.type !== "cpu") parts.push(`device free ${gib(dev.vram_free)} / ${gib(dev.vram_total)}`);
    if (stats?.system?.ram_total) parts.push(`RAM free ${gib(stats.system.ram_free)} / ${gib(stats.system.ram_total)}`);
    if (flux.demo_only) parts.push(el("span", { class: "fluxloom-demo" }, "demo model only: images are noise"));
    if (flux.device_bytes !== undefined) {
      parts.push(`on device ${mib(flux.device_bytes)} (peak ${mib(flux.peak_device_bytes || 0)})`);
    }
    const models = [...held(stats).values()].map((m) =>
      el(
        "span",
        { class: `fluxloom-model ${m.location === "device" ? "" : "offloaded"}`, dataset: { kind: m.kind || "", location: m.location } },
        `${m.kind} ${mib(m.bytes || 0)} ${m.location === "device" ? "on device" : "in RAM"}`,
      ),
    );
    parts.push(el("span", { class: "fluxloom-models" }, "loaded: ", ...(models.length ? models : ["none"])));
    if (this.phase) parts.push(el("span", { class: "fluxloom-phase" }, `running ${this.phase.label}`));
    if (this.moves.length) parts.push(el("span", { class: "fluxloom-moves" }, `moves: ${this.moves.join(" → ")}`));
    for (const warning of this.warnings) parts.push(el("span", { class: "fluxloom-warning" }, `⚠ ${warning}`));
    const line = [];
    parts.forEach((p, i) => line.push(...(i ? [" · ", p] : [p])));
    this.element.replaceChildren(...line);
    this.element.dataset.loaded = String(models.length);
    this.element.dataset.demo = String(Boolean(flux.demo_only));
  }

  setRunning(running) {
    this.running = running;
    this.schedule(running ? 0 : IDLE_POLL_MS);
  }

  schedule(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      await this.refresh();
      this.schedule(this.running ? RUNNING_POLL_MS : IDLE_POLL_MS);
    }, delay);
  }
}

/** The phase group of the graph that holds a node (by the node's position), if any. */
function phaseOf(nodeId) {
  const graph = app.graph;
  const node = graph?.getNodeById?.(nodeId);
  if (!node) return null;
  for (const group of graph.groups || graph._groups || []) {
    const phase = PHASES.find((p) => p.match.test(group.title || ""));
    const [x, y, w, h] = group._bounding || group.bounding || [];
    if (phase && node.pos[0] >= x && node.pos[0] <= x + w && node.pos[1] >= y && node.pos[1] <= y + h) {
      return { ...phase, group };
    }
  }
  return null;
}

/** Outline the running phase group on the canvas (drawn, not stored in the workflow). */
function drawPhase(panel) {
  const canvas = app.canvas;
  if (!canvas || canvas.__fluxloomPhase) return;
  canvas.__fluxloomPhase = true;
  const previous = canvas.onDrawForeground;
  canvas.onDrawForeground = function (ctx, area) {
    previous?.call(this, ctx, area);
    const phase = panel.phase;
    const [x, y, w, h] = phase?.group?._bounding || phase?.group?.bounding || [];
    if (!phase || w === undefined) return;
    ctx.save();
    ctx.strokeStyle = phase.colour;
    ctx.lineWidth = 6;
    ctx.setLineDash([18, 10]);
    ctx.strokeRect(x - 6, y - 6, w + 12, h + 12);
    ctx.restore();
  };
}

// What a new page opens instead of the frontend's own default graph (ComfyUI nodes fluxloom
// does not have): the two-phase low-VRAM FLUX workflow, as fluxloom's canvas does.
const DEFAULT_WORKFLOW = "flux-dev-lowvram-8bit";

function nodeTypes(graph) {
  return (graph?.nodes || []).map((n) => n.type).sort().join(",");
}

async function replaceBuiltinDefault(graphData) {
  const builtin = window.comfyAPI?.defaultGraph?.defaultGraph;
  if (!builtin || nodeTypes(graphData) !== nodeTypes(builtin)) return;
  const res = await fetch(api.fileURL(`/templates/${DEFAULT_WORKFLOW}.json`), { cache: "no-store" });
  if (!res.ok) return; // no shipped default: keep what the frontend chose
  const ours = await res.json();
  for (const key of Object.keys(graphData)) delete graphData[key];
  Object.assign(graphData, ours); // the frontend configures from this (its own copy) next
}

app.registerExtension({
  name: "fluxloom.status",

  async beforeConfigureGraph(graphData) {
    await replaceBuiltinDefault(graphData);
  },

  async setup() {
    const css = new URL("./fluxloom.css", import.meta.url);
    document.head.append(el("link", { rel: "stylesheet", href: css.href }));
    const panel = new StatusPanel();
    window.fluxloomStatus = panel; // for the browser tests and the console
    drawPhase(panel);

    // fluxloom's own event: registering a listener also tells the frontend the type is known.
    api.addEventListener("execution_warning", ({ detail }) => {
      if (!detail?.message) return;
      toast("warning", "fluxloom", detail.message, 20000);
      panel.warnings = [...panel.warnings, detail.message];
      if (panel.stats) panel.render();
    });
    api.addEventListener("execution_start", () => {
      panel.warnings = [];
      panel.phases = [];
      panel.setRunning(true);
    });
    const showPhase = (phase) => {
      if (phase?.label === panel.phase?.label) return;
      panel.phase = phase;
      if (phase) panel.phases = [...panel.phases, phase.label];
      if (panel.stats) panel.render();
      app.canvas?.setDirty(true, true);
    };
    api.addEventListener("executing", ({ detail }) => {
      if (detail === null || detail === undefined) {
        showPhase(null);
        panel.setRunning(false);
        return;
      }
      panel.refreshSoon(); // the node before it is done: catch the models it loaded or released
      const phase = phaseOf(detail);
      if (phase) showPhase(phase); // a node outside the groups keeps the phase it is in
    });
    for (const done of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(done, () => {
        showPhase(null);
        panel.setRunning(false);
      });
    }
    api.addEventListener("status", ({ detail }) => {
      const remaining = detail?.exec_info?.queue_remaining ?? 0;
      if ((remaining > 0) !== panel.running) panel.setRunning(remaining > 0);
    });
    await panel.refresh();
    panel.schedule(IDLE_POLL_MS);
  },
});
