"""Live previews in fluxloom's canvas (real Chromium, a real `fluxloom serve` with the demo model):
during the default workflow's 20-step run the canvas receives ComfyUI's binary preview frames,
draws them on the FluxSampler node while it runs, and clears them when it finishes; the frame
reader handles both frame types; a late frame of a finished node is not drawn."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from tests.browser.canvas import nodes_of_type

pytestmark = pytest.mark.browser
META = {"node_id": "8", "display_node_id": "8", "prompt_id": "p", "image_type": "image/jpeg"}

# Count the frames the page receives and what the sampling node showed at each, and every time
# the canvas draws a preview image (a blob: URL) — the proof it is on screen.
RECORD_PREVIEWS = """() => {
window.__previews = { frames: 0, states: [], drawn: 0, drawnSize: null, success: false };
const api = window.fluxloom.app.api;
api.addEventListener("preview", (e) => {
  const p = window.__previews;
  const node = window.fluxloom.graph.getNodeById(Number(e.detail.nodeId));
  p.frames++;
  p.states.push({ node: e.detail.nodeId, type: node?.type ?? null, running: Boolean(node?.flux?.running),
                  frames: node?.flux?.preview?.frames ?? 0, prompt: e.detail.promptId });
});
api.addEventListener("execution_success", () => { window.__previews.success = true; });
const drawImage = CanvasRenderingContext2D.prototype.drawImage;
CanvasRenderingContext2D.prototype.drawImage = function (img, ...rest) {
  if (img instanceof HTMLImageElement && img.src.startsWith("blob:")) {
    window.__previews.drawn++;
    window.__previews.drawnSize = [img.naturalWidth, img.naturalHeight];
  }
  return drawImage.call(this, img, ...rest);
};
}"""


def test_previews_appear_on_the_sampler_during_a_20_step_run_and_go_when_it_ends(page):
    sampler = nodes_of_type(page, "FluxSampler")[0]
    steps = page.evaluate(
        "(id) => window.fluxloom.graph.getNodeById(id).widgets.find(w => w.name === 'steps').value", sampler
    )
    assert steps == 20
    # A seed of its own: the session's server caches outputs, and other tests run the default.
    page.evaluate(
        "(id) => { const n = window.fluxloom.graph.getNodeById(id);"
        " n.widgets.find(w => w.name === 'seed').value = 4242; }",
        sampler,
    )
    page.evaluate(RECORD_PREVIEWS)
    page.click("#queue-button")
    page.wait_for_function("window.__previews.success", timeout=240_000)
    got = page.evaluate("window.__previews")
    # Throttled to a few a second, never more than one a step, at least the first step's.
    assert 1 <= got["frames"] <= steps, got
    for state in got["states"]:
        assert state["node"] == str(sampler) and state["type"] == "FluxSampler", state
        assert state["running"] and state["frames"] >= 1, state
    assert len({s["prompt"] for s in got["states"]}) == 1
    # Drawn on the canvas, at the size the server made (a 1024x1024 run: its 128x128 latent x4).
    assert got["drawn"] >= 1 and got["drawnSize"] == [512, 512], got
    # The run is over: the sampler no longer shows a preview (SaveImage shows the image).
    assert page.evaluate("(id) => window.fluxloom.graph.getNodeById(id).flux.preview", sampler) is None


def _frame(kind: int, image: bytes, meta: dict | None = None) -> str:
    if kind == 4:
        body = json.dumps(meta).encode()
        data = struct.pack(">II", 4, len(body)) + body + image
    else:
        data = struct.pack(">II", kind, 1) + image
    return base64.b64encode(data).decode()


def test_frame_reader_and_late_frames(page):
    parsed = page.evaluate(
        """async (frames) => {
            const { parsePreviewFrame } = await import("/js/preview.js");
            const buf = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
            const out = [];
            for (const f of frames) {
              const p = parsePreviewFrame(buf(f));
              out.push(p && { nodeId: p.nodeId, promptId: p.promptId, type: p.blob.type,
                              text: await p.blob.text() });
            }
            return out;
        }""",
        [
            _frame(4, b"JPEG4", META),
            _frame(1, b"JPEG1"),
            _frame(3, b"progress text is another binary event"),
        ],
    )
    assert parsed == [
        {"nodeId": "8", "promptId": "p", "type": "image/jpeg", "text": "JPEG4"},
        {"nodeId": None, "promptId": None, "type": "image/jpeg", "text": "JPEG1"},
        None,
    ]
    # A frame for a node that is not running (it finished; frames can cross its last event) is
    # not drawn; one for the running node is, and ending that node clears it.
    sampler = nodes_of_type(page, "FluxSampler")[0]
    shown = page.evaluate(
        """(id) => {
            const ex = window.fluxloom.app.execution;
            const node = window.fluxloom.graph.getNodeById(id);
            const blob = new Blob([new Uint8Array([0xff, 0xd8])], { type: "image/jpeg" });
            ex.onPreview({ nodeId: String(id), promptId: null, blob });
            const late = node.flux.preview;
            ex.onExecuting({ node: String(id), prompt_id: "p" });
            ex.onPreview({ nodeId: String(id), promptId: null, blob });
            const live = node.flux.preview?.frames ?? 0;
            ex.onExecuting({ node: null, prompt_id: "p" });
            return { late, live, after: node.flux.preview };
        }""",
        sampler,
    )
    assert shown == {"late": None, "live": 1, "after": None}
