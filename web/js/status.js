// The status line: device, free memory and the models the model manager holds, from
// `/system_stats`. It is polled quickly while a prompt runs, so a user watches the phase 1
// models (CLIP, T5) leave the device before the phase 2 ones (transformer, VAE) arrive.

function gib(bytes) {
  return `${(bytes / 2 ** 30).toFixed(bytes >= 10 * 2 ** 30 ? 0 : 1)} GiB`;
}

function mib(bytes) {
  return bytes >= 2 ** 30 ? gib(bytes) : `${(bytes / 2 ** 20).toFixed(bytes >= 10 * 2 ** 20 ? 0 : 1)} MiB`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// "device" models are in use; "cpu" ones were offloaded to host RAM to make room.
function modelBadge(m) {
  const where = m.location === "device" ? "on device" : "offloaded to RAM";
  const cls = m.location === "device" ? "model" : "model offloaded";
  const name = escapeHtml(m.name || m.kind || "model");
  return `<span class="${cls}" data-kind="${escapeHtml(m.kind || "")}" data-location="${escapeHtml(
    m.location,
  )}">${name} ${mib(m.bytes || 0)} ${where}</span>`;
}

export function renderStatus(stats) {
  const dev = stats?.devices?.[0];
  const flux = stats?.fluxloom || {};
  const parts = [];
  const device = flux.device || dev?.name || dev?.type || "unknown device";
  parts.push(`<b>${escapeHtml(device)}</b>`);
  // On a CPU-only machine the "device" is the RAM; say it once.
  if (dev?.vram_total && dev.type !== "cpu") {
    parts.push(`device memory free ${gib(dev.vram_free)} / ${gib(dev.vram_total)}`);
  }
  const sys = stats?.system;
  if (sys?.ram_total) parts.push(`RAM free ${gib(sys.ram_free)} / ${gib(sys.ram_total)}`);
  if (flux.demo_only) parts.push(`<span class="demo">demo model only: images are noise</span>`);
  if (flux.device_bytes !== undefined) {
    parts.push(`models on device ${mib(flux.device_bytes)} (peak ${mib(flux.peak_device_bytes || 0)})`);
  }
  const loaded = (flux.loaded || []).filter((m) => m.location !== "none");
  const models = loaded.length ? loaded.map(modelBadge).join("") : "none";
  parts.push(`loaded: ${models}`);
  return parts.join(" · ");
}

/** What changed between two `loaded` lists: ["T5 released", "FLUX_MODEL loaded", ...]. */
export function modelChanges(before, after) {
  const key = (m) => `${m.kind}:${m.name}`;
  const was = new Map((before || []).filter((m) => m.location !== "none").map((m) => [key(m), m]));
  const now = new Map((after || []).filter((m) => m.location !== "none").map((m) => [key(m), m]));
  const changes = [];
  for (const [k, m] of was) {
    const n = now.get(k);
    if (!n) changes.push(`${m.kind} released`);
    else if (n.location !== m.location) changes.push(`${m.kind} ${n.location === "device" ? "back on device" : "offloaded"}`);
  }
  for (const [k, m] of now) if (!was.has(k)) changes.push(`${m.kind} loaded`);
  return changes;
}

const HISTORY = 6;

export class StatusLine {
  constructor(api, element) {
    this.api = api;
    this.element = element;
    this.timer = null;
    this.stats = null;
    this.fast = false;
    this.history = []; // the last model moves seen, oldest first
  }

  async refresh() {
    try {
      const previous = this.stats?.fluxloom?.loaded;
      this.stats = await this.api.systemStats();
      if (previous) {
        this.history.push(...modelChanges(previous, this.stats?.fluxloom?.loaded));
        this.history = this.history.slice(-HISTORY);
      }
      const recent = this.history.length ? ` · recent: ${escapeHtml(this.history.join(" → "))}` : "";
      this.element.innerHTML = renderStatus(this.stats) + recent;
      this.element.dataset.loaded = String(this.stats?.fluxloom?.loaded?.length ?? 0);
    } catch (err) {
      this.element.textContent = `server unreachable (${err.message})`;
    }
    return this.stats;
  }

  /** Poll every 500 ms while running, every 5 s when idle. */
  setRunning(running) {
    this.fast = running;
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      await this.refresh();
      this.schedule();
    }, this.fast ? 500 : 5000);
  }
}
