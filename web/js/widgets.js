// Widgets built from `/object_info` input specs: numbers with min/max/step, single and multi-line
// text, combos and toggles, plus the seed's "control after generate" companion widget.
import { LiteGraph, TextWidget } from "@comfyorg/litegraph";

export const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];
// Randomized seeds stay exactly representable in a JS number (and so in the saved JSON).
const MAX_RANDOM_SEED = Number.MAX_SAFE_INTEGER;

/** Decimal places needed to show a step such as 0.01 without rounding it away. */
function decimals(step) {
  if (!step || Number.isInteger(step)) return 0;
  const text = String(step);
  return text.includes("e-") ? Number(text.split("e-")[1]) : (text.split(".")[1] || "").length;
}

/** True for an `/object_info` spec that is drawn as a widget rather than a socket. */
export function isWidgetSpec(spec) {
  const kind = spec[0];
  return Array.isArray(kind) || ["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"].includes(kind);
}

function numberWidget(node, name, kind, opts) {
  const isInt = kind === "INT";
  const step = opts.step ?? (isInt ? 1 : 0.01);
  const precision = isInt ? 0 : opts.round !== undefined ? decimals(opts.round) : decimals(step);
  // Whole numbers beyond 2^53 (a seed's 2^64-1 maximum) do not survive a JS number; stay below.
  const min = isInt ? Math.max(opts.min ?? -Infinity, -Number.MAX_SAFE_INTEGER) : opts.min;
  const max = isInt ? Math.min(opts.max ?? Infinity, Number.MAX_SAFE_INTEGER) : opts.max;
  const widget = node.addWidget("number", name, opts.default ?? 0, () => {}, {
    min,
    max,
    step2: step,
    precision,
  });
  // litegraph neither rounds typed values to whole numbers nor to the step; the server would
  // refuse 7.5 for an INT (and a width must be a multiple of 16), so keep the value valid here.
  widget.callback = (value) => {
    let v = Number(value);
    if (!Number.isFinite(v)) v = opts.default ?? 0;
    if (isInt) {
      const base = Number.isFinite(min) ? min : 0;
      v = step > 1 ? base + Math.round((v - base) / step) * step : Math.round(v);
    } else if (precision > 0) {
      v = Number(v.toFixed(precision));
    }
    if (min !== undefined) v = Math.max(min, v);
    if (max !== undefined) v = Math.min(max, v);
    widget.value = v;
  };
  return widget;
}

/** A multi-line text widget: shows several wrapped lines and edits in a textarea dialog. */
class MultilineWidget extends TextWidget {
  constructor(widget, node) {
    super(widget, node);
    this.type = "customtext";
    this.options = { ...(widget.options || {}), multiline: true };
  }

  static LINES = 5;

  computeSize(width) {
    return [width ?? 200, MultilineWidget.LINES * 16 + 8];
  }

  drawWidget(ctx, { width }) {
    const { y } = this;
    const margin = 15;
    const height = MultilineWidget.LINES * 16 + 8;
    ctx.save();
    ctx.fillStyle = LiteGraph.WIDGET_BGCOLOR;
    ctx.strokeStyle = this.outline_color;
    ctx.beginPath();
    ctx.roundRect(margin, y, width - margin * 2, height, [6]);
    ctx.fill();
    ctx.stroke();
    ctx.clip();
    ctx.font = "12px sans-serif";
    const text = String(this.value ?? "");
    ctx.fillStyle = text ? LiteGraph.WIDGET_TEXT_COLOR : LiteGraph.WIDGET_SECONDARY_TEXT_COLOR;
    const lines = wrap(ctx, text || this.options.placeholder || this.name, width - margin * 2 - 12);
    lines.slice(0, MultilineWidget.LINES).forEach((line, i) => ctx.fillText(line, margin + 6, y + 16 + i * 16));
    ctx.restore();
  }
}

function wrap(ctx, text, maxWidth) {
  const out = [];
  for (const paragraph of text.split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (ctx.measureText(candidate).width > maxWidth && line) {
        out.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    out.push(line);
  }
  return out;
}

function stringWidget(node, name, opts) {
  if (opts.multiline) {
    const widget = new MultilineWidget(
      { name, type: "customtext", value: opts.default ?? "", options: { placeholder: opts.placeholder } },
      node,
    );
    node.addCustomWidget(widget);
    return widget;
  }
  return node.addWidget("text", name, opts.default ?? "", () => {}, {});
}

/** The companion combo after a seed: what to do to the seed after each queue (as ComfyUI). */
function controlWidget(node, target) {
  const widget = node.addWidget("combo", "control_after_generate", "randomize", () => {}, {
    values: CONTROL_VALUES,
  });
  widget.fluxControls = target;
  target.fluxControl = widget;
  return widget;
}

/** Apply fixed/increment/decrement/randomize to one seed widget (after a successful queue). */
export function applyControl(seedWidget) {
  const mode = seedWidget.fluxControl?.value;
  const { min = 0, max = MAX_RANDOM_SEED } = seedWidget.options;
  let v = Number(seedWidget.value);
  if (mode === "increment") v = Math.min(max, v + 1);
  else if (mode === "decrement") v = Math.max(min, v - 1);
  else if (mode === "randomize") {
    const hi = Math.min(max, MAX_RANDOM_SEED);
    v = min + Math.floor(Math.random() * (hi - min + 1));
  }
  seedWidget.value = v;
}

/** Add the widget(s) for one input spec; returns the main widget. */
export function addWidgetForSpec(node, name, spec) {
  const [kind, opts = {}] = spec;
  let widget;
  if (Array.isArray(kind)) {
    const values = kind.slice();
    const value = opts.default !== undefined && values.includes(opts.default) ? opts.default : values[0];
    // An empty list (no models found) still needs a widget, so the node can say what is missing.
    // Picking an installed choice settles a "missing" mark on this widget.
    widget = node.addWidget("combo", name, value ?? "", () => {
      if (node.flux?.note?.widget === name && !node.flux.note.demo) node.flux.note = null;
    }, { values });
  } else if (kind === "INT" || kind === "FLOAT") {
    widget = numberWidget(node, name, kind, opts);
  } else if (kind === "STRING") {
    widget = stringWidget(node, name, opts);
  } else if (kind === "BOOLEAN") {
    widget = node.addWidget("toggle", name, Boolean(opts.default), () => {}, {
      on: opts.label_on ?? "true",
      off: opts.label_off ?? "false",
    });
  } else {
    throw new Error(`input ${name}: unknown widget type ${kind}`);
  }
  widget.fluxSpec = { kind: Array.isArray(kind) ? "COMBO" : kind, options: opts };
  if (opts.tooltip) widget.tooltip = opts.tooltip;
  if (kind === "INT" && opts.control_after_generate) controlWidget(node, widget);
  return widget;
}

/** For a combo of input images: a button that uploads a file and selects it (ComfyUI's upload). */
export function addUploadButton(node, combo, upload) {
  const button = node.addWidget("button", "choose file to upload", null, () => {
    const picker = document.createElement("input");
    picker.type = "file";
    picker.accept = "image/png,image/jpeg,image/webp";
    picker.addEventListener("change", async () => {
      const file = picker.files?.[0];
      if (!file) return;
      const result = await upload(file);
      if (!result) return;
      const name = result.subfolder ? `${result.subfolder}/${result.name}` : result.name;
      if (!combo.options.values.includes(name)) combo.options.values.push(name);
      combo.value = name;
      node.setDirtyCanvas(true, true);
    });
    picker.click();
  });
  // Not an input of the node: kept out of widgets_values so saved workflows stay ComfyUI-shaped.
  button.serialize = false;
  return button;
}
