// The toolbar buttons, keyboard shortcuts and file drops, wired to the app.
import { downloadJson } from "./workflows.js";

const $ = (id) => document.getElementById(id);

export function bindToolbar(app) {
  $("queue-button").addEventListener("click", () => app.queue());
  $("interrupt-button").addEventListener("click", async () => {
    try {
      await app.api.interrupt();
      app.notice("interrupt requested");
    } catch (err) {
      app.notice(`interrupt failed: ${err.message}`, { error: true });
    }
  });
  $("save-button").addEventListener("click", () => {
    const name = prompt("Save workflow as", app.currentName || "workflow");
    if (name) downloadJson(app.serialize(), name.endsWith(".json") ? name : `${name}.json`);
  });
  $("load-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", async (e) => {
    const file = e.target.files?.[0];
    e.target.value = "";
    if (file) await app.openFile(file);
  });
  $("workflow-menu").addEventListener("change", async (e) => {
    const name = e.target.value;
    e.target.value = "";
    if (!name) return;
    try {
      await app.loadServerWorkflow(name);
    } catch (err) {
      app.notice(`could not open ${name}: ${err.message}`, { error: true });
    }
  });
  $("save-server-button").addEventListener("click", async () => {
    const name = prompt("Save on the server as", "my-workflow");
    if (!name) return;
    try {
      await app.api.saveWorkflow(name, app.serialize());
      app.notice(`saved on the server as ${name}`);
      await app.refreshWorkflowMenu();
    } catch (err) {
      app.notice(`saving ${name} failed: ${err.message}`, { error: true });
    }
  });
  $("add-node-button").addEventListener("click", (e) => app.canvas.showSearchBox(e));
  $("fit-button").addEventListener("click", () => {
    app.placeView(null, true);
    app.canvas.setDirty(true, true);
  });
  $("refresh-button").addEventListener("click", () => app.refreshChoices());
  $("error-close").addEventListener("click", () => ($("error-panel").hidden = true));
  $("lightbox").addEventListener("click", () => ($("lightbox").hidden = true));
}

export function bindKeys(app) {
  window.addEventListener(
    "keydown",
    (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
        e.preventDefault();
        e.stopPropagation();
        app.queue();
      } else if (e.key === "Escape") {
        $("lightbox").hidden = true;
      }
    },
    true,
  );
}

export function bindDrop(app) {
  const hint = $("drop-hint");
  document.addEventListener("dragover", (e) => {
    if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
    e.preventDefault();
    hint.hidden = false;
  });
  document.addEventListener("dragleave", (e) => {
    if (e.relatedTarget === null) hint.hidden = true;
  });
  document.addEventListener("drop", async (e) => {
    hint.hidden = true;
    const file = e.dataTransfer?.files?.[0];
    if (!file) return;
    e.preventDefault();
    e.stopPropagation();
    await app.openFile(file);
  });
}
