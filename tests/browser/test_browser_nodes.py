"""Node-level behaviour around a run: text outputs shown on the node, an execution error that
names the node and can be read in full, the Interrupt button, and uploading an input image."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.browser.canvas import empty_graph, evaluate, nodes_of_type, widget_point, widget_value
from tests.browser.conftest import SCREENSHOTS

pytestmark = pytest.mark.browser

RECORD_EVENTS = """
window.__events = [];
for (const t of ["executing", "progress", "executed", "execution_success", "execution_error",
                 "execution_interrupted"]) {
  window.fluxloom.app.api.addEventListener(t, (e) => window.__events.push({ type: t, data: e.detail }));
}
"""


def _math_graph(page, a: int, b: int, op: str) -> tuple[int, int]:
    """IntegerMath → ShowValue (scene setup through the hook; connecting by mouse is tested elsewhere)."""
    empty_graph(page)
    return tuple(
        evaluate(
            page,
            """
            const LG = window.fluxloom.LiteGraph, g = window.fluxloom.graph;
            const m = LG.createNode("IntegerMath"); m.pos = [60, 80]; g.add(m);
            const v = LG.createNode("ShowValue"); v.pos = [420, 80]; g.add(v);
            m.widgets.find(w => w.name === "a").value = arg.a;
            m.widgets.find(w => w.name === "b").value = arg.b;
            m.widgets.find(w => w.name === "operation").value = arg.op;
            m.connect(0, v, 0);
            return [m.id, v.id];
            """,
            {"a": a, "b": b, "op": op},
        )
    )


def test_text_output_is_shown_on_the_node(page):
    _, show = _math_graph(page, 40, 2, "add")
    page.click("#queue-button")
    page.wait_for_function("(id) => window.fluxloom.graph.getNodeById(id).flux?.text?.length > 0", arg=show)
    assert evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.text;", show) == ["42"]


def test_execution_error_names_the_node_and_reads_in_full(page):
    math, _ = _math_graph(page, 7, 0, "divide")
    page.click("#queue-button")
    page.wait_for_function("(id) => window.fluxloom.graph.getNodeById(id).flux?.error", arg=math)
    notice = page.locator("#notice.error")
    text = notice.text_content()
    assert "Integer Math" in text and f"#{math}" in text and "by zero" in text
    notice.click()
    page.wait_for_selector("#error-panel:not([hidden])")
    body = page.text_content("#error-body")
    assert "Traceback" in body and "ZeroDivisionError" in body


def test_interrupt_button_stops_the_sampler(page):
    page.evaluate(RECORD_EVENTS)
    sampler = nodes_of_type(page, "FluxSampler")[0]
    # A seed no other test used, so the sampler really runs (not from the cache).
    evaluate(
        page,
        "window.fluxloom.graph.getNodeById(arg).widgets.find(w => w.name === 'seed').value = 987654;",
        sampler,
    )
    page.click("#queue-button")
    page.wait_for_function(
        "(id) => window.__events.some(e => e.type === 'progress' && e.data.node === String(id))",
        arg=sampler,
        timeout=240_000,
    )
    # Mid-run: the sampler is outlined with its progress bar (the README's "running" picture).
    page.set_viewport_size({"width": 1920, "height": 640})
    page.wait_for_function("window.fluxloom.canvas.canvas.width === 1920 * devicePixelRatio")
    page.click("#fit-button")
    assert evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.running;", sampler) is True
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "running.png"))
    page.click("#interrupt-button")
    page.wait_for_function("window.__events.some(e => e.type === 'execution_interrupted')", timeout=60_000)
    assert not page.evaluate("window.__events.some(e => e.type === 'execution_success')")
    assert "interrupted" in page.text_content("#notice")
    assert page.evaluate("window.fluxloom.graph._nodes.some(n => n.flux?.running)") is False


def test_upload_button_puts_an_image_in_the_combo(page, tmp_path):
    empty_graph(page)
    node = evaluate(
        page,
        """
        const n = window.fluxloom.LiteGraph.createNode("LoadImage"); n.pos = [100, 100];
        window.fluxloom.graph.add(n); return n.id;
        """,
    )
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    path = tmp_path / "uploaded-cat.png"
    Image.new("RGB", (32, 32), (10, 120, 200)).save(path)
    with page.expect_file_chooser() as fc:
        page.mouse.click(*widget_point(page, node, "choose file to upload"))
    fc.value.set_files(str(path))
    page.wait_for_function(
        "(id) => String(window.fluxloom.graph.getNodeById(id).widgets[0].value).includes('uploaded-cat')",
        arg=node,
    )
    assert widget_value(page, node, "image").endswith(".png")
    # The button is not an input: the saved workflow holds only the image name.
    saved = page.evaluate("(id) => window.fluxloom.app.serialize().nodes.find(n => n.id === id)", node)
    assert saved["widgets_values"] == [widget_value(page, node, "image")]


def test_refresh_lists_an_image_added_after_the_page_opened(page, server):
    empty_graph(page)
    node = evaluate(
        page,
        """
        const n = window.fluxloom.LiteGraph.createNode("LoadImage"); n.pos = [100, 100];
        window.fluxloom.graph.add(n); return n.id;
        """,
    )
    Image.new("RGB", (8, 8), (250, 250, 0)).save(server.root / "data" / "input" / "added-later.png")
    values = "(id) => window.fluxloom.graph.getNodeById(id).widgets[0].options.values"
    assert "added-later.png" not in page.evaluate(values, node)
    page.click("#refresh-button")
    page.wait_for_function(f"(id) => ({values})(id).includes('added-later.png')", arg=node)
