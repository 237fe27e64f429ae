"""The canvas as an editor: node types from /object_info, the Add Node menu and the search box,
typed sockets connected with the mouse, and widgets edited in place."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.canvas import (
    drag,
    empty_graph,
    empty_point,
    evaluate,
    input_link,
    link_count,
    node_point,
    nodes_of_type,
    slot_point,
    widget_point,
    widget_value,
)

pytestmark = pytest.mark.browser


def _object_info(server) -> dict:
    with urllib.request.urlopen(server.url + "object_info") as r:
        return json.load(r)


def _add_node(page, class_type: str, x: float, y: float) -> int:
    """Put a node on the graph (scene setup; the search-box test covers adding like a user)."""
    return evaluate(
        page,
        """
        const n = window.fluxloom.LiteGraph.createNode(arg.type);
        n.pos = [arg.x, arg.y];
        window.fluxloom.graph.add(n);
        return n.id;
        """,
        {"type": class_type, "x": x, "y": y},
    )


def test_every_object_info_node_type_is_registered_with_its_category(page, server):
    info = _object_info(server)
    assert {"EmptyLatent16ch", "FluxSampler", "SaveImage"} <= set(info)
    registered = page.evaluate(
        """() => Object.fromEntries(Object.entries(window.fluxloom.LiteGraph.registered_node_types)
              .map(([k, c]) => [k, {category: c.category, title: c.title}]))"""
    )
    assert set(registered) == set(info) | {"Note", "MarkdownNote"}  # ComfyUI's notes: canvas-only
    for name, entry in info.items():
        assert registered[name]["category"] == entry["category"], name
        assert registered[name]["title"] == entry["display_name"], name


def test_add_node_menu_lists_the_categories(page, server):
    info = _object_info(server)
    top_level = {entry["category"].split("/")[0] for entry in info.values()}
    page.mouse.click(*empty_point(page), button="right")
    page.get_by_text("Add Node", exact=True).click()
    menu = page.locator(".litecontextmenu").last
    menu.wait_for()
    shown = set(menu.locator(".litemenu-entry").all_inner_texts())
    assert top_level <= {s.strip() for s in shown}, (top_level, shown)


def test_search_box_adds_a_node(page):
    before = len(nodes_of_type(page, "EmptyLatent16ch"))
    page.mouse.dblclick(*empty_point(page))
    box = page.locator(".litesearchbox input")
    box.wait_for()
    box.press_sequentially("EmptyLatent16")  # typed: the box filters on key presses
    page.wait_for_function(
        """() => {
            const items = [...document.querySelectorAll('.litesearchbox .lite-search-item')];
            const match = (e) => e.dataset.type.toLowerCase().includes('emptylatent16');
            return items.length > 0 && items.every(match);
        }"""
    )
    first = page.locator(".litesearchbox .lite-search-item").first
    assert first.get_attribute("data-type") == "EmptyLatent16ch"
    box.press("Enter")
    page.wait_for_function(
        "(n) => window.fluxloom.graph._nodes.filter(x => x.type === 'EmptyLatent16ch').length > n", arg=before
    )
    assert page.locator(".litesearchbox").count() == 0


def test_mouse_connects_matching_sockets_and_refuses_mismatched_ones(page):
    empty_graph(page)
    latent = _add_node(page, "EmptyLatent16ch", 50, 100)
    sampler = _add_node(page, "FluxSampler", 500, 100)
    page.evaluate("window.fluxloom.canvas.draw(true, true)")

    # LATENT → FLUX_MODEL: litegraph refuses it; no link appears.
    drag(page, slot_point(page, latent, "latent", False), slot_point(page, sampler, "model", True))
    assert link_count(page) == 0
    assert input_link(page, sampler, "model") is None

    # LATENT → LATENT connects.
    drag(page, slot_point(page, latent, "latent", False), slot_point(page, sampler, "latent", True))
    assert input_link(page, sampler, "latent") == {"origin": latent, "origin_slot": 0, "type": "LATENT"}
    assert link_count(page) == 1


def test_widgets_are_edited_in_place(page):
    empty_graph(page)
    latent = _add_node(page, "EmptyLatent16ch", 80, 80)
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    value = lambda name: widget_value(page, latent, name)  # noqa: E731
    spec = page.evaluate("window.fluxloom.app.objectInfo.EmptyLatent16ch.input.required.width[1]")
    assert value("width") == spec["default"]

    # The right arrow steps by the declared step.
    page.mouse.click(*widget_point(page, latent, "width", "right"))
    assert value("width") == spec["default"] + spec["step"]

    # Clicking the middle opens a value prompt; typed values are clamped to min/max.
    page.mouse.click(*widget_point(page, latent, "width"))
    dialog = page.locator(".graphdialog input.value")
    dialog.wait_for()
    dialog.fill("512")
    dialog.press("Enter")
    assert value("width") == 512
    page.mouse.click(*widget_point(page, latent, "width"))
    dialog.wait_for()
    dialog.fill("999999")
    dialog.press("Enter")
    assert value("width") == spec["max"]
    # ... and rounded to the declared step (width is a multiple of 16 above its minimum).
    page.mouse.click(*widget_point(page, latent, "width"))
    dialog.wait_for()
    dialog.fill("500")
    dialog.press("Enter")
    assert value("width") == 496


def test_multiline_prompt_is_edited_in_a_textarea(page):
    empty_graph(page)
    encode = _add_node(page, "EncodePrompt", 80, 80)
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    page.mouse.click(*widget_point(page, encode, "prompt"))
    area = page.locator(".graphdialog textarea")
    area.wait_for()
    area.fill("a lighthouse at dusk\nwith fog")
    page.locator(".graphdialog button").click()
    assert widget_value(page, encode, "prompt") == "a lighthouse at dusk\nwith fog"


def test_an_int_output_drives_a_widget_through_its_socket(page):
    empty_graph(page)
    first = _add_node(page, "IntegerMath", 40, 80)
    second = _add_node(page, "IntegerMath", 420, 80)
    show = _add_node(page, "ShowValue", 800, 80)
    text = _add_node(page, "Text", 40, 320)
    evaluate(
        page,
        """
        const g = window.fluxloom.graph;
        const set = (id, name, v) => (g.getNodeById(id).widgets.find(w => w.name === name).value = v);
        set(arg.first, "a", 3); set(arg.first, "b", 4); set(arg.first, "operation", "multiply");
        set(arg.second, "b", 1);
        """,
        {"first": first, "second": second},
    )
    page.evaluate("window.fluxloom.canvas.draw(true, true)")

    # STRING → an INT widget: refused.
    drag(page, slot_point(page, text, "text", False), slot_point(page, second, "a", True))
    assert input_link(page, second, "a") is None
    # INT → the INT widget "a": connected; the widget now shows as disabled (fed by the link).
    drag(page, slot_point(page, first, "result", False), slot_point(page, second, "a", True))
    assert input_link(page, second, "a") == {"origin": first, "origin_slot": 0, "type": "INT"}
    drag(page, slot_point(page, second, "result", False), slot_point(page, show, "value", True))
    assert input_link(page, show, "value") is not None

    page.click("#queue-button")
    page.wait_for_function("(id) => window.fluxloom.graph.getNodeById(id).flux?.text?.length > 0", arg=show)
    assert evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.text;", show) == ["13"]


def test_bypass_from_the_node_menu_passes_the_input_through(page):
    empty_graph(page)
    first = _add_node(page, "IntegerMath", 40, 80)
    second = _add_node(page, "IntegerMath", 420, 80)
    show = _add_node(page, "ShowValue", 800, 80)
    evaluate(
        page,
        """
        const g = window.fluxloom.graph;
        const set = (id, name, v) => (g.getNodeById(id).widgets.find(w => w.name === name).value = v);
        set(arg.first, "a", 20); set(arg.first, "b", 1);
        set(arg.second, "b", 1000);
        const a = g.getNodeById(arg.first), b = g.getNodeById(arg.second), s = g.getNodeById(arg.show);
        a.connect(0, b, b.findInputSlot("a"));
        b.connect(0, s, 0);
        """,
        {"first": first, "second": second, "show": show},
    )
    page.evaluate("window.fluxloom.canvas.draw(true, true)")
    page.mouse.click(*node_point(page, second, 0.5, -0.05), button="right")  # on the title
    page.locator(".litecontextmenu .litemenu-entry", has_text="Mode").first.click()
    page.locator(".litecontextmenu .litemenu-entry", has_text="Bypass").last.click()
    assert evaluate(page, "return window.fluxloom.graph.getNodeById(arg).mode;", second) == 4

    with page.expect_request(lambda r: r.url.endswith("/prompt") and r.method == "POST") as req:
        page.click("#queue-button")
    assert str(second) not in req.value.post_data_json["prompt"]
    page.wait_for_function("(id) => window.fluxloom.graph.getNodeById(id).flux?.text?.length > 0", arg=show)
    assert evaluate(page, "return window.fluxloom.graph.getNodeById(arg).flux.text;", show) == ["21"]
