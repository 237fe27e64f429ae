// What a node shows about a run: running outline and progress bar, live preview while it samples,
// "cached" badge, validation or execution errors (on the node and on the offending inputs),
// missing-model notes, and output images (click one to open it full size). The state lives on
// `node.flux` so tests can read it.
import { LiteGraph } from "@comfyorg/litegraph";

const RUNNING = "#4caf50";
const ERROR = "#ff4d4d";
const WARN = "#ffb74d";
const IMAGE_MIN_HEIGHT = 220;
const MODE_MUTED = 2;
const MODE_BYPASS = 4;

export function stateOf(node) {
  node.flux ??= {
    running: false,
    progress: null,
    preview: null, // {frames, shown: HTMLImageElement | null} while the node runs
    cached: false,
    error: null,
    note: null,
    images: [],
    text: [],
  };
  return node.flux;
}

/** Clear the marks of the previous run (not the images, which stay until replaced). */
export function clearRunMarks(graph) {
  for (const node of graph._nodes) {
    const s = stateOf(node);
    s.running = false;
    s.progress = null;
    s.cached = false;
    s.error = null;
    if (s.preview) clearPreview(node);
  }
  graph.setDirtyCanvas(true, true);
}

function widgetsBottom(node) {
  let bottom = 0;
  for (const w of node.widgets || []) bottom = Math.max(bottom, (w.y ?? 0) + (w.computedHeight ?? 24));
  // Widget sockets sit on their widgets; only plain sockets take rows of their own.
  const sockets = (node.inputs || []).filter((slot) => !slot.widget).length;
  const slots = Math.max(sockets, node.outputs?.length || 0);
  return Math.max(bottom, slots * LiteGraph.NODE_SLOT_HEIGHT + 6);
}

function makeImageRoom(node) {
  const need = widgetsBottom(node) + IMAGE_MIN_HEIGHT;
  if (node.size[1] < need) node.setSize([Math.max(node.size[0], 260), need]);
}

/** Show output images; grows the node so they have room. */
export function setImages(node, urls) {
  const s = stateOf(node);
  s.images = urls.map((url) => {
    const img = new Image();
    img.onload = () => node.setDirtyCanvas(true, false);
    img.src = url;
    return { url, img };
  });
  makeImageRoom(node);
  node.setDirtyCanvas(true, true);
}

/** Show a live preview frame (a JPEG blob) on a running node, in place of its images; the frame
 * shown changes once the next one has decoded, and never back to an older one. */
export function setPreview(node, blob) {
  const s = stateOf(node);
  const preview = (s.preview ??= { frames: 0, shown: null, shownSeq: 0 });
  const seq = ++preview.frames;
  const url = URL.createObjectURL(blob);
  const img = new Image();
  img.onload = () => {
    if (s.preview !== preview || seq < preview.shownSeq) {
      URL.revokeObjectURL(url); // cleared meanwhile, or a newer frame is already up
      return;
    }
    if (preview.shown) URL.revokeObjectURL(preview.shown.src);
    preview.shown = img;
    preview.shownSeq = seq;
    node.setDirtyCanvas(true, false);
  };
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
  if (seq === 1) makeImageRoom(node);
}

export function clearPreview(node) {
  const s = stateOf(node);
  if (!s.preview) return;
  if (s.preview.shown) URL.revokeObjectURL(s.preview.shown.src);
  s.preview = null;
  node.setDirtyCanvas(true, false);
}

/** Show text outputs (e.g. ShowValue) inside the node. */
export function setText(node, lines) {
  const s = stateOf(node);
  s.text = lines.map(String);
  const need = widgetsBottom(node) + 8 + s.text.length * 16;
  if (node.size[1] < need) node.setSize([node.size[0], need]);
  node.setDirtyCanvas(true, true);
}

function drawText(node, ctx) {
  const { text } = stateOf(node);
  if (!text?.length) return;
  const top = widgetsBottom(node) + 4;
  ctx.save();
  ctx.font = "12px monospace";
  ctx.fillStyle = "#cfe";
  text.forEach((line, i) => ctx.fillText(line, 10, top + 14 + i * 16, node.size[0] - 20));
  ctx.restore();
}

function imageRect(node) {
  const top = widgetsBottom(node) + 4;
  return { x: 6, y: top, w: node.size[0] - 12, h: Math.max(0, node.size[1] - top - 6) };
}

function drawPreview(node, ctx) {
  const img = stateOf(node).preview?.shown;
  if (!img) return false;
  const r = imageRect(node);
  const scale = Math.min(r.w / img.naturalWidth, r.h / img.naturalHeight);
  const w = img.naturalWidth * scale;
  const h = img.naturalHeight * scale;
  ctx.drawImage(img, r.x + (r.w - w) / 2, r.y + (r.h - h) / 2, w, h);
  return true;
}

function drawImages(node, ctx) {
  const { images } = stateOf(node);
  if (drawPreview(node, ctx) || !images.length) return;
  const r = imageRect(node);
  const n = images.length;
  const cell = r.w / n;
  images.forEach(({ img }, i) => {
    if (!img.complete || !img.naturalWidth) return;
    const scale = Math.min(cell / img.naturalWidth, r.h / img.naturalHeight);
    const w = img.naturalWidth * scale;
    const h = img.naturalHeight * scale;
    ctx.drawImage(img, r.x + i * cell + (cell - w) / 2, r.y + (r.h - h) / 2, w, h);
  });
}

function outline(node, ctx, color, width = 3) {
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  ctx.roundRect(-4, -title - 4, node.size[0] + 8, node.size[1] + title + 8, [10]);
  ctx.stroke();
  ctx.restore();
}

/** Draw a badge in the title bar, right-aligned at `right`; returns where the next one ends. */
function badge(node, ctx, text, color, right = node.size[0] - 6) {
  ctx.save();
  ctx.font = "bold 11px sans-serif";
  const w = ctx.measureText(text).width + 12;
  const x = right - w;
  const y = -LiteGraph.NODE_TITLE_HEIGHT + 7;
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.roundRect(x, y, w, 16, [8]);
  ctx.fill();
  ctx.fillStyle = "#111";
  ctx.fillText(text, x + 6, y + 12);
  ctx.restore();
  return x - 4;
}

function markInput(node, ctx, name) {
  const widget = node.widgets?.find((w) => w.name === name);
  ctx.save();
  ctx.strokeStyle = ERROR;
  ctx.lineWidth = 2;
  if (widget) {
    ctx.beginPath();
    ctx.roundRect(10, widget.y - 2, node.size[0] - 20, (widget.computedHeight ?? 24) - 0, [8]);
    ctx.stroke();
  } else {
    const i = node.inputs?.findIndex((slot) => slot.name === name) ?? -1;
    if (i >= 0) {
      const [x, y] = node.getConnectionPos(true, i);
      ctx.beginPath();
      ctx.arc(x - node.pos[0], y - node.pos[1], 8, 0, Math.PI * 2);
      ctx.stroke();
    }
  }
  ctx.restore();
}

function footer(node, ctx, text, color) {
  ctx.save();
  ctx.font = "12px sans-serif";
  ctx.fillStyle = color;
  ctx.fillText(text.length > 60 ? `${text.slice(0, 57)}…` : text, 6, node.size[1] + 16);
  ctx.restore();
}

export function drawNodeState(node, ctx) {
  const s = stateOf(node);
  drawImages(node, ctx);
  drawText(node, ctx);
  let right = node.size[0] - 6;
  if (s.running) {
    outline(node, ctx, RUNNING);
    if (s.progress && s.progress.max > 0) {
      const frac = Math.min(1, s.progress.value / s.progress.max);
      ctx.fillStyle = RUNNING;
      ctx.fillRect(0, -4, node.size[0] * frac, 6);
      right = badge(node, ctx, `${s.progress.value}/${s.progress.max}`, RUNNING, right);
    }
  }
  if (node.mode === MODE_BYPASS || node.mode === MODE_MUTED) {
    const bypass = node.mode === MODE_BYPASS;
    ctx.save();
    ctx.fillStyle = bypass ? "#a020f040" : "#00000080";
    ctx.fillRect(0, -LiteGraph.NODE_TITLE_HEIGHT, node.size[0], node.size[1] + LiteGraph.NODE_TITLE_HEIGHT);
    ctx.restore();
    right = badge(node, ctx, bypass ? "bypassed" : "muted", bypass ? "#c080ff" : "#9e9e9e", right);
  }
  if (s.cached) right = badge(node, ctx, "cached", "#9e9e9e", right);
  if (s.note) {
    badge(node, ctx, s.note.badge, WARN, right);
    footer(node, ctx, s.note.text, WARN);
  }
  if (s.error) {
    outline(node, ctx, ERROR);
    for (const name of s.error.inputs || []) markInput(node, ctx, name);
    footer(node, ctx, s.error.message, ERROR);
  }
}

/** Click on an output image opens it full size. */
export function nodeMouseDown(node, e, pos) {
  const { images } = stateOf(node);
  if (!images.length) return false;
  const r = imageRect(node);
  const [x, y] = pos;
  if (x < r.x || x > r.x + r.w || y < r.y || y > r.y + r.h) return false;
  const i = Math.min(images.length - 1, Math.floor(((x - r.x) / r.w) * images.length));
  document.dispatchEvent(new CustomEvent("fluxloom:open-image", { detail: { url: images[i].url } }));
  return true;
}
