"""Live previews in the official ComfyUI frontend (real Chromium, the real package, a real
`fluxloom serve --frontend comfyui` with the demo model): during a 20-step run of a shipped
workflow the frontend gets fluxloom's type 4 preview frames naming the FluxSampler node, puts
them in its preview store for that node and draws them on the canvas."""

from __future__ import annotations

import pytest

from tests.frontend.frontend_page import APP, open_template, run_and_wait_for_image, shrink

pytestmark = pytest.mark.browser

# The frontend's own events for preview frames, what its store holds for the node after each,
# and every preview image (a blob: URL) the canvas draws.
RECORD_PREVIEWS = f"""() => {{
window.__previews = {{ typed: [], plain: 0, stored: [], drawn: 0, drawnSize: null }};
const api = window.comfyAPI.api.api;
api.addEventListener("b_preview_with_metadata", (e) => {{
  const p = window.__previews;
  p.typed.push({{ node: e.detail.displayNodeId, job: e.detail.jobId, type: e.detail.blob.type }});
  const urls = {APP}.nodePreviewImages?.[e.detail.displayNodeId] ?? [];
  p.stored.push(urls.length > 0 && urls.every((u) => u.startsWith("blob:")));
}});
api.addEventListener("b_preview", () => {{ window.__previews.plain++; }});
const drawImage = CanvasRenderingContext2D.prototype.drawImage;
CanvasRenderingContext2D.prototype.drawImage = function (img, ...rest) {{
  if (img instanceof HTMLImageElement && img.src.startsWith("blob:")) {{
    window.__previews.drawn++;
    window.__previews.drawnSize = [img.naturalWidth, img.naturalHeight];
  }}
  return drawImage.call(this, img, ...rest);
}};
}}"""


def test_previews_appear_during_a_20_step_run(page, comfy_server):
    features = page.evaluate("window.comfyAPI.api.api.serverFeatureFlags.value")
    assert features["supports_preview_metadata"] is True
    open_template(page, "flux-dev-lowvram-8bit")
    shrink(page, size=256, steps=20)
    sampler = page.evaluate(f"String({APP}.graph.nodes.find(n => n.type === 'FluxSampler').id)")
    page.evaluate(RECORD_PREVIEWS)
    run_and_wait_for_image(page, size=256)
    got = page.evaluate("window.__previews")
    # Throttled to a few a second, never more than one a step, at least the first step's.
    assert 1 <= len(got["typed"]) <= 20, got
    assert {(t["node"], t["type"]) for t in got["typed"]} == {(sampler, "image/jpeg")}
    assert len({t["job"] for t in got["typed"]}) == 1
    # Each frame also goes out as the generic `b_preview` event (as ComfyUI's own server's do).
    assert got["plain"] == len(got["typed"])
    assert all(got["stored"]), got  # in the frontend's preview store for the sampler node
    # And on the canvas, at the size the server made (a 256x256 run: its 32x32 latent x8).
    assert got["drawn"] >= 1 and got["drawnSize"] == [256, 256], got
