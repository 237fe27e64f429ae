// The server's ComfyUI-compatible HTTP API and websocket, as one small client. Every call goes to
// the page's own origin, so the canvas works behind any host/port the server was started on.
import { parsePreviewFrame } from "./preview.js";

/** An HTTP error that keeps the server's JSON body (e.g. validation `node_errors`). */
export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function readBody(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function describe(body, status) {
  if (body && typeof body === "object" && body.error) {
    return typeof body.error === "string" ? body.error : body.error.message || JSON.stringify(body.error);
  }
  return typeof body === "string" && body ? body : `HTTP ${status}`;
}

export class Api extends EventTarget {
  constructor(base = "") {
    super();
    this.base = base;
    this.clientId = sessionStorage.getItem("fluxloom.clientId") || crypto.randomUUID();
    sessionStorage.setItem("fluxloom.clientId", this.clientId);
    this.socket = null;
    this.connected = false;
  }

  async fetchJson(path, options = {}) {
    const init = { ...options, headers: { ...(options.headers || {}) } };
    if (init.json !== undefined) {
      init.body = JSON.stringify(init.json);
      init.headers["Content-Type"] = "application/json";
      delete init.json;
    }
    const response = await fetch(this.base + path, init);
    const body = await readBody(response);
    if (!response.ok) throw new ApiError(response.status, body, describe(body, response.status));
    return body;
  }

  objectInfo() {
    return this.fetchJson("/object_info");
  }

  systemStats() {
    return this.fetchJson("/system_stats");
  }

  queue() {
    return this.fetchJson("/queue");
  }

  /** POST /prompt with the UI workflow itself (the server converts it, and keeps it as the
   * PNG's `workflow`); throws ApiError with the `node_errors` body on a 400. */
  queuePrompt(workflow) {
    return this.fetchJson("/prompt", {
      method: "POST",
      json: { prompt: workflow, client_id: this.clientId, extra_data: { extra_pnginfo: { workflow } } },
    });
  }

  interrupt() {
    return this.fetchJson("/interrupt", { method: "POST", json: {} });
  }

  listWorkflows() {
    return this.fetchJson("/workflows");
  }

  getWorkflow(name) {
    return this.fetchJson(`/workflows/${encodeURIComponent(name)}`);
  }

  saveWorkflow(name, workflow) {
    return this.fetchJson(`/workflows/${encodeURIComponent(name)}`, { method: "PUT", json: workflow });
  }

  /** POST /upload/image (multipart, as ComfyUI); returns {name, subfolder, type}. */
  uploadImage(file) {
    const form = new FormData();
    form.append("image", file, file.name);
    return this.fetchJson("/upload/image", { method: "POST", body: form });
  }

  viewUrl(image) {
    const q = new URLSearchParams({
      filename: image.filename,
      subfolder: image.subfolder || "",
      type: image.type || "output",
    });
    return `${this.base}/view?${q}`;
  }

  /** Open the websocket; every message is re-dispatched as a CustomEvent named after its type,
   * and live previews (binary frames) as `preview` events: {blob, nodeId, promptId}. */
  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}${this.base}/ws?clientId=${encodeURIComponent(this.clientId)}`;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.connected = true;
      // ComfyUI's handshake: previews with their node id (the server answers with its own flags).
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.dispatchEvent(new CustomEvent("connected"));
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        const preview = parsePreviewFrame(event.data);
        if (preview) this.dispatchEvent(new CustomEvent("preview", { detail: preview }));
        return;
      }
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg?.data?.sid) {
        this.clientId = msg.data.sid;
        sessionStorage.setItem("fluxloom.clientId", this.clientId);
      }
      this.dispatchEvent(new CustomEvent(msg.type, { detail: msg.data }));
    });
    socket.addEventListener("close", () => {
      const was = this.connected;
      this.connected = false;
      if (was) this.dispatchEvent(new CustomEvent("disconnected"));
      // Reconnect quietly: the server may be restarting.
      setTimeout(() => this.connect(), 1000);
    });
    // An error is followed by close; nothing more to do here (and no console noise).
    socket.addEventListener("error", () => {});
  }
}
