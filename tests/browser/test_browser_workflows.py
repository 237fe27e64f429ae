"""Workflows in and out of the canvas: drop a JSON file or a PNG that carries a workflow, save →
load round trip through a real download and the file picker, and the server's saved workflows."""

from __future__ import annotations

import io
import json
import urllib.request

import pytest
from PIL import Image

from nodes.image import png_metadata
from tests.browser.canvas import drop_file, empty_graph, evaluate, graph_state, widget_point

pytestmark = pytest.mark.browser


def _scene(page, width: int) -> dict:
    """A small two-node graph, serialized by the canvas itself."""
    empty_graph(page)
    evaluate(
        page,
        """
        const LG = window.fluxloom.LiteGraph, g = window.fluxloom.graph;
        const latent = LG.createNode("EmptyLatent16ch");
        latent.pos = [60, 60];
        g.add(latent);
        latent.widgets.find(w => w.name === "width").value = arg;
        const dec = LG.createNode("VAEDecode");
        dec.pos = [420, 60];
        g.add(dec);
        """,
        width,
    )
    return graph_state(page)


def _widths(page) -> list:
    return page.evaluate(
        """window.fluxloom.graph._nodes.filter(n => n.type === 'EmptyLatent16ch')
             .map(n => n.widgets.find(w => w.name === 'width').value)"""
    )


def test_dropping_a_workflow_json_opens_it(page):
    wf = _scene(page, 768)
    empty_graph(page)
    drop_file(page, "scene.json", "application/json", json.dumps(wf).encode())
    page.wait_for_function("window.fluxloom.graph._nodes.length === 2")
    assert _widths(page) == [768]
    assert "scene.json" in page.text_content("#notice")
    assert graph_state(page)["nodes"] == wf["nodes"]


def test_dropping_a_png_opens_the_workflow_it_carries(page):
    wf = _scene(page, 640)
    wf["nodes"][0]["title"] = "Größe ☕ 東京"  # not latin-1: PIL writes an iTXt chunk
    empty_graph(page)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG", pnginfo=png_metadata({"1": {}}, wf))
    drop_file(page, "made-by-fluxloom.png", "image/png", buf.getvalue())
    page.wait_for_function("window.fluxloom.graph._nodes.length === 2")
    assert _widths(page) == [640]
    assert page.evaluate("window.fluxloom.graph._nodes[0].title") == "Größe ☕ 東京"


def test_dropping_a_png_without_a_workflow_says_so(page):
    _scene(page, 640)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    drop_file(page, "plain.png", "image/png", buf.getvalue())
    page.wait_for_function("document.getElementById('notice').classList.contains('error')")
    assert "carries no workflow" in page.text_content("#notice")
    assert page.evaluate("window.fluxloom.graph._nodes.length") == 2  # the graph is untouched


def test_save_then_load_round_trips_without_change(page, tmp_path):
    # The default workflow: groups, links, a seed with its control value, multiline text.
    before = graph_state(page)
    assert len(before["nodes"]) > 5 and len(before["groups"]) == 2
    page.once("dialog", lambda d: d.accept("roundtrip"))
    with page.expect_download() as dl:
        page.click("#save-button")
    download = dl.value
    assert download.suggested_filename == "roundtrip.json"
    path = tmp_path / "roundtrip.json"
    download.save_as(path)
    saved = json.loads(path.read_text())
    assert saved["nodes"] == before["nodes"] and saved["links"] == before["links"]

    empty_graph(page)
    assert page.evaluate("window.fluxloom.graph._nodes.length") == 0
    with page.expect_file_chooser() as fc:
        page.click("#load-button")
    fc.value.set_files(str(path))
    page.wait_for_function("(n) => window.fluxloom.graph._nodes.length === n", arg=len(before["nodes"]))
    assert graph_state(page) == before


def test_save_to_server_then_open_from_the_menu(page, server):
    _scene(page, 1152)
    page.once("dialog", lambda d: d.accept("browser-saved"))
    page.click("#save-server-button")
    page.wait_for_function(
        "[...document.querySelectorAll('#workflow-menu option')].some(o => o.value === 'browser-saved')"
    )
    with urllib.request.urlopen(server.url + "workflows/browser-saved") as r:
        stored = json.load(r)
    assert [n["type"] for n in stored["nodes"]] == ["EmptyLatent16ch", "VAEDecode"]

    empty_graph(page)
    page.select_option("#workflow-menu", "browser-saved")
    page.wait_for_function("window.fluxloom.graph._nodes.length === 2")
    assert _widths(page) == [1152]


def test_last_graph_is_kept_across_reloads(page):
    _scene(page, 1280)
    page.evaluate("window.fluxloom.app.persist()")
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'true'")
    assert _widths(page) == [1280]


def test_a_missing_input_image_is_marked_with_the_choices_offered(page, server):
    # One image in the server's input folder, so there is a choice to offer.
    Image.new("RGB", (8, 8), (0, 200, 0)).save(server.root / "data" / "input" / "pick-me.png")
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'true'")
    _scene(page, 512)
    wf = evaluate(
        page,
        """
        const n = window.fluxloom.LiteGraph.createNode("LoadImage");
        n.pos = [60, 300];
        window.fluxloom.graph.add(n);
        const wf = JSON.parse(JSON.stringify(window.fluxloom.app.serialize()));
        wf.nodes.find(x => x.type === "LoadImage").widgets_values = ["not-here.png"];
        return wf;
        """,
    )
    page.evaluate("(wf) => window.fluxloom.app.loadWorkflow(wf, 'test')", wf)
    note = page.evaluate("window.fluxloom.graph._nodes.find(n => n.type === 'LoadImage').flux.note")
    assert note["badge"] == "missing"
    assert "not-here.png" in note["text"] and "choose" in note["text"]
    assert "not-here.png" in page.text_content("#notice")

    # Picking an available image from the combo settles the mark.
    node = page.evaluate("window.fluxloom.graph._nodes.find(n => n.type === 'LoadImage').id")
    choices = page.evaluate("window.fluxloom.app.objectInfo.LoadImage.input.required.image[0]")
    assert "pick-me.png" in choices and "pick-me.png" in note["text"]
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    page.mouse.click(*widget_point(page, node, "image"))
    page.locator(".litecontextmenu .litemenu-entry").first.click()
    assert page.evaluate("(id) => window.fluxloom.graph.getNodeById(id).flux.note", node) is None
