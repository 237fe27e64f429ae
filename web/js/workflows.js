// Getting workflows in and out of the canvas: download as JSON, open a JSON or PNG (file picker
// or drag and drop), the server's saved workflows, and the last graph kept in localStorage.
import { pngTextChunks } from "./png.js";

export const STORAGE_KEY = "fluxloom.workflow";
export const DEFAULT_WORKFLOW = "flux-dev-lowvram-8bit";

export function isUiWorkflow(data) {
  return Boolean(data) && typeof data === "object" && Array.isArray(data.nodes) && "links" in data;
}

/** Workflow from a dropped or picked file: a UI-format JSON, or a PNG with a `workflow` chunk. */
export async function readWorkflowFile(file) {
  const isPng = file.type === "image/png" || file.name.toLowerCase().endsWith(".png");
  let data;
  if (isPng) {
    const chunks = await pngTextChunks(await file.arrayBuffer());
    if (!chunks.workflow) {
      throw new Error(
        chunks.prompt
          ? `${file.name} carries only an API prompt, not a canvas workflow`
          : `${file.name} carries no workflow (no 'workflow' text chunk)`,
      );
    }
    data = parseJson(chunks.workflow, `${file.name}: its workflow chunk`);
  } else {
    data = parseJson(await file.text(), file.name);
  }
  if (!isUiWorkflow(data)) throw new Error(`${file.name} is not a canvas workflow (it has no 'nodes' and 'links')`);
  return data;
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not valid JSON (${err.message})`);
  }
}

export function downloadJson(data, filename) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export function storeLastGraph(workflow) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(workflow));
  } catch {
    // A full or disabled localStorage only loses the convenience of reopening the last graph.
  }
}

export function lastGraph() {
  try {
    const data = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    return isUiWorkflow(data) ? data : null;
  } catch {
    return null;
  }
}

/** Names from `GET /workflows`, whatever shape the list comes in (names or objects). */
export function workflowNames(listing) {
  const items = Array.isArray(listing) ? listing : listing?.workflows || Object.keys(listing || {});
  return items.map((item) => (typeof item === "string" ? item : item.name)).filter(Boolean);
}

/** A server workflow's body: the UI workflow itself, or wrapped as {workflow: ...}. */
export function unwrapWorkflow(body) {
  if (isUiWorkflow(body)) return body;
  if (isUiWorkflow(body?.workflow)) return body.workflow;
  throw new Error("the server sent a workflow that is not in canvas (UI) format");
}
