"""Running graphs from the canvas against the real server with the demo model: the default
workflow opens pointing at the demo model, Ctrl+Enter makes an image that appears in SaveImage,
running/cached nodes are marked, validation errors land on the offending node and input, and the
status line shows the model manager's models. Writes the README's screenshots."""

from __future__ import annotations

import urllib.request
from urllib.parse import urljoin

import pytest

from tests.browser.canvas import (
    drop_file,
    empty_graph,
    evaluate,
    graph_state,
    node_point,
    nodes_of_type,
    widget_point,
    widget_value,
)
from tests.browser.conftest import SCREENSHOTS

pytestmark = pytest.mark.browser

# Collect the websocket messages the page receives, to check what the canvas was told.
RECORD_EVENTS = """
window.__events = [];
for (const t of ["execution_start", "execution_cached", "executing", "progress", "executed",
                 "execution_success", "execution_error"]) {
  window.fluxloom.app.api.addEventListener(t, (e) => window.__events.push({ type: t, data: e.detail }));
}
"""


def _wait_for_image(page, save_id: int, timeout: float = 240_000) -> str:
    page.wait_for_function(
        """(id) => {
            const s = window.fluxloom.graph.getNodeById(id)?.flux;
            return s && s.images.length > 0 && s.images.every(i => i.img.complete && i.img.naturalWidth > 0);
        }""",
        arg=save_id,
        timeout=timeout,
    )
    return evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.images[0].url;", save_id)


def _seed_widget(page) -> tuple[int, str]:
    sampler = nodes_of_type(page, "FluxSampler")[0]
    return sampler, "seed"


def test_default_workflow_opens_on_the_demo_model_and_runs(page, server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    types = page.evaluate("window.fluxloom.graph._nodes.map(n => n.type)")
    for t in ("LoadCLIP", "LoadT5-8bit", "LoadFluxTransformer", "LoadVAE", "EncodePrompt", "FluxSampler"):
        assert t in types, f"default workflow lacks {t}: {types}"
    groups = page.evaluate("window.fluxloom.graph._groups.map(g => g.title)")
    assert "Phase 1: encode" in groups and "Phase 2: sample + decode" in groups

    # Only the demo model is installed: every loader points at it and says its images are noise.
    for loader in ("LoadCLIP", "LoadT5-8bit", "LoadFluxTransformer", "LoadVAE"):
        for nid in nodes_of_type(page, loader):
            assert widget_value(page, nid, "source") == "fluxloom-demo"
            note = evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.note;", nid)
            if note is not None:  # marked when the saved source was another model
                assert note["badge"] == "demo model" and "not installed" in note["text"]
    assert "noise" in page.text_content("#status-line")
    assert "noise" in page.text_content("#notice")
    assert page.get_attribute("#queue-size", "data-size") == "0"
    # The graph is wide: a wide window and the Fit button make a readable screenshot.
    page.set_viewport_size({"width": 1920, "height": 640})
    page.wait_for_function("window.fluxloom.canvas.canvas.width === 1920 * devicePixelRatio")
    page.click("#fit-button")
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    page.screenshot(path=str(SCREENSHOTS / "default-workflow.png"))

    page.evaluate(RECORD_EVENTS)
    sampler, seed = _seed_widget(page)
    seed_before = widget_value(page, sampler, seed)
    control = widget_value(page, sampler, "control_after_generate")
    save = (nodes_of_type(page, "SaveImage") or nodes_of_type(page, "PreviewImage"))[0]

    page.click("#graph-canvas", position={"x": 5, "y": 5})
    page.keyboard.press("Control+Enter")
    url = _wait_for_image(page, save)
    page.wait_for_function("window.__events.some(e => e.type === 'execution_success')", timeout=60_000)
    assert "/view?" in url

    events = page.evaluate("window.__events")
    executing = [e["data"]["node"] for e in events if e["type"] == "executing"]
    assert str(sampler) in executing and executing[-1] is None
    assert any(e["type"] == "progress" and e["data"]["node"] == str(sampler) for e in events)
    # After a run nothing stays highlighted.
    assert page.evaluate("window.fluxloom.graph._nodes.some(n => n.flux?.running)") is False

    # The seed control was applied after queueing, as in ComfyUI.
    seed_after = widget_value(page, sampler, seed)
    if control == "fixed":
        assert seed_after == seed_before
    elif control == "increment":
        assert seed_after == seed_before + 1
    elif control == "decrement":
        assert seed_after == seed_before - 1

    # The model manager's models show in the status line.
    page.wait_for_function("Number(document.getElementById('status-line').dataset.loaded) > 0")
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    page.screenshot(path=str(SCREENSHOTS / "default-workflow-after-run.png"))

    # Click the image: it opens full size.
    page.mouse.click(*node_point(page, save, 0.5, 0.75))
    page.wait_for_selector("#lightbox:not([hidden])")
    assert page.get_attribute("#lightbox-img", "src") == url
    page.wait_for_function("document.getElementById('lightbox-img').naturalWidth > 0")
    page.keyboard.press("Escape")
    assert page.is_hidden("#lightbox")

    # The PNG that SaveImage wrote carries the workflow: dropping it reopens the same graph.
    with urllib.request.urlopen(urljoin(server.url, url)) as r:
        png = r.read()
    before = graph_state(page)
    empty_graph(page)
    drop_file(page, "fluxloom-output.png", "image/png", png)
    page.wait_for_function("(n) => window.fluxloom.graph._nodes.length === n", arg=len(before["nodes"]))
    after = graph_state(page)
    assert [n["type"] for n in after["nodes"]] == [n["type"] for n in before["nodes"]]
    assert after["links"] == before["links"] and after["groups"] == before["groups"]


def test_unchanged_nodes_are_marked_cached_on_the_next_run(page):
    page.evaluate(RECORD_EVENTS)
    sampler = nodes_of_type(page, "FluxSampler")[0]
    encode = nodes_of_type(page, "EncodePrompt")[0]
    # Pick "fixed" in the seed's control combo, as a user would.
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    page.mouse.click(*widget_point(page, sampler, "control_after_generate"))
    page.locator(".litecontextmenu .litemenu-entry", has_text="fixed").click()
    assert widget_value(page, sampler, "control_after_generate") == "fixed"
    for _ in range(2):
        page.click("#queue-button")
        page.wait_for_function("window.__events.some(e => e.type === 'execution_success')", timeout=240_000)
        page.evaluate("window.__events = window.__events.filter(e => e.type !== 'execution_success')")
    cached = page.evaluate("window.__events.filter(e => e.type === 'execution_cached').at(-1).data.nodes")
    assert str(encode) in cached
    assert evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.cached;", encode) is True


def test_validation_errors_are_shown_on_the_node_and_input(page, console):
    console.expected_http_errors.append("/prompt")  # the server answers 400 with node_errors
    decode = nodes_of_type(page, "VAEDecode")[0]
    # Cut the VAE link as a user would by dragging it off (the graph API does the same).
    evaluate(
        page,
        """
        const n = window.fluxloom.graph.getNodeById(arg);
        n.disconnectInput(n.findInputSlot("vae"));
        """,
        decode,
    )
    page.click("#graph-canvas", position={"x": 5, "y": 5})
    page.keyboard.press("Control+Enter")
    page.wait_for_function("(id) => window.fluxloom.graph.getNodeById(id).flux.error !== null", arg=decode)
    error = evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.error;", decode)
    assert "vae" in error["inputs"]
    notice = page.locator("#notice.error")
    assert "VAE" in notice.text_content() or "vae" in notice.text_content()
    notice.click()
    page.wait_for_selector("#error-panel:not([hidden])")
    assert f"#{decode}" in page.text_content("#error-body")
    page.click("#error-close")
    page.screenshot(path=str(SCREENSHOTS / "validation-error.png"))


def test_status_line_names_the_model_moves_between_phases(page):
    """The phase change as the status line reports it from two `/system_stats` snapshots."""
    changes = page.evaluate(
        """async () => {
            const { modelChanges } = await import("/js/status.js");
            const m = (kind, location) => ({ name: `demo/${kind}`, kind, location, bytes: 1 });
            const phase1 = [m("CLIP", "device"), m("T5", "device")];
            const phase2 = [m("FLUX_MODEL", "device"), m("VAE", "device"), m("CLIP", "cpu")];
            return modelChanges(phase1, phase2);
        }"""
    )
    assert changes == ["CLIP offloaded", "T5 released", "FLUX_MODEL loaded", "VAE loaded"]
