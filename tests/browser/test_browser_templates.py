"""ComfyUI's FLUX.1 templates on fluxloom's canvas: dropped as JSON or inside a PNG saved by
ComfyUI, they open with no unknown node; a subgraph instance shows as one node (its definition's
inputs, outputs and promoted widgets); what the canvas saves keeps the definitions and converts on
the server to the prompt the template itself gives; and Queue runs it (the server inlines it)."""

from __future__ import annotations

import io
import json
import urllib.request
from urllib.parse import urljoin

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import nodes
from server.workflow_io import to_api
from tests.browser.canvas import drop_file, empty_graph, evaluate, graph_state
from tests.comfy_workflows.conftest import TEXT_TO_IMAGE_TEMPLATES, load_template

pytestmark = pytest.mark.browser

FLUX_DEV = "2523c08d-4c99-4b73-910c-62c873f124db"  # flux_dev_full_text_to_image's subgraph, instance 194
DEMO = "fluxloom-demo"
# The loader inputs the canvas points at the demo model on a machine that has only it.
LOADER_FILES = {"unet_name", "ckpt_name", "clip_name1", "clip_name2", "vae_name"}

INSTANCE = """
const n = window.fluxloom.graph.getNodeById(arg);
return {
  type: n.type, title: n.title, subgraph: n.isSubgraphNode(), name: n.subgraph?.name,
  inputs: n.inputs.map(i => i.name), outputs: n.outputs.map(o => o.name),
  widgets: Object.fromEntries(n.widgets.map(w => [w.name, w.value])),
};
"""


def open_by_drop(page, name: str, data: bytes, mime: str, node_count: int) -> None:
    empty_graph(page)
    drop_file(page, name, mime, data)
    page.wait_for_function("(n) => window.fluxloom.graph._nodes.length === n", arg=node_count)


def same_prompt_but_the_demo_files(saved: dict, template: dict) -> None:
    """The server's conversion of what the canvas saved is the template's own prompt, but for
    the loaders the canvas pointed at the demo model."""
    registry = nodes.load_all()
    ours, theirs = to_api(saved, registry), to_api(template, registry)
    assert set(ours) == set(theirs)
    for nid, node in theirs.items():
        inputs = dict(ours[nid]["inputs"])
        for name in LOADER_FILES & set(inputs):
            assert inputs[name] == DEMO
            inputs[name] = node["inputs"][name]
        assert (ours[nid]["class_type"], inputs) == (node["class_type"], node["inputs"]), nid


@pytest.mark.parametrize("name", TEXT_TO_IMAGE_TEMPLATES)
def test_dropped_template_opens_and_saves_what_the_server_runs(page, name):
    template = load_template(name)
    open_by_drop(
        page, f"{name}.json", json.dumps(template).encode(), "application/json", len(template["nodes"])
    )
    notice = page.text_content("#notice")
    assert "unknown" not in notice and "Only the demo model is installed" in notice
    assert page.evaluate("window.fluxloom.graph._nodes.every(n => !n.has_errors)")
    saved = graph_state(page)
    defined = [d["id"] for d in (template.get("definitions") or {}).get("subgraphs", [])]
    assert [d["id"] for d in (saved.get("definitions") or {}).get("subgraphs", [])] == defined
    same_prompt_but_the_demo_files(saved, template)
    notes = {n["id"]: n["widgets_values"] for n in template["nodes"] if n["type"] in ("Note", "MarkdownNote")}
    assert {n["id"]: n["widgets_values"] for n in saved["nodes"] if n["id"] in notes} == notes


def test_subgraph_instance_is_one_node_and_queue_runs_it(page, server):
    template = load_template("flux_dev_full_text_to_image")
    open_by_drop(
        page, "flux_dev_full_text_to_image.json", json.dumps(template).encode(), "application/json", 3
    )
    instance = evaluate(page, INSTANCE, 194)
    assert instance["type"] == FLUX_DEV and instance["subgraph"] is True
    assert instance["title"] == instance["name"] == "Text to Image (Flux.1 Dev)"
    assert instance["outputs"] == ["IMAGE"]
    # The definition's inputs, each a promoted widget with the inner node's value.
    assert instance["inputs"] == [
        "text", "width", "height", "seed", "unet_name", "clip_name1", "clip_name2", "vae_name"
    ]  # fmt: skip
    assert instance["widgets"]["width"] == 1024 and instance["widgets"]["unet_name"] == DEMO
    assert instance["widgets"]["text"].startswith("A fairy tale scene")

    # Small and quick: the promoted size widgets set the inner latent's size.
    page.evaluate(
        """() => {
            const n = window.fluxloom.graph.getNodeById(194);
            for (const name of ["width", "height"]) n.widgets.find(w => w.name === name).value = 64;
        }"""
    )
    page.evaluate(
        """window.__events = [];
        for (const t of ["executing", "execution_success", "execution_error"]) {
          window.fluxloom.app.api.addEventListener(t, (e) => window.__events.push({type: t, data: e.detail}));
        }"""
    )
    page.click("#queue-button")
    page.wait_for_function(
        "window.__events.some(e => e.type === 'execution_success' || e.type === 'execution_error')",
        timeout=240_000,
    )
    events = page.evaluate("window.__events")
    assert not [e for e in events if e["type"] == "execution_error"], events
    executing = [e["data"]["node"] for e in events if e["type"] == "executing"]
    assert "194:50" in executing and "9" in executing  # the inner KSampler ran, then SaveImage
    # An inner node's progress and errors show on its instance.
    assert evaluate(page, "return window.fluxloom.app.execution.node('194:50')?.id;") == 194
    page.wait_for_function("window.fluxloom.graph.getNodeById(9).flux.images.length > 0")
    url = evaluate(page, "return window.fluxloom.graph.getNodeById(9).flux.images[0].url;")
    with urllib.request.urlopen(urljoin(server.url, url)) as r:
        png = Image.open(io.BytesIO(r.read()))
        png.load()
    assert png.size == (64, 64)
    ran = json.loads(png.text["prompt"])
    assert ran["194:48"]["inputs"]["width"] == 64 and ran["194:46"]["inputs"]["unet_name"] == DEMO
    assert json.loads(png.text["workflow"])["definitions"]["subgraphs"][0]["id"] == FLUX_DEV


def test_dropping_a_png_saved_by_comfyui_opens_its_template(page):
    """ComfyUI's SaveImage writes the API prompt and the UI workflow as tEXt chunks."""
    template = load_template("flux_dev_checkpoint_example")
    info = PngInfo()
    info.add_text("prompt", json.dumps(to_api(template, nodes.load_all())))
    info.add_text("workflow", json.dumps(template))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 40, 60)).save(buf, "PNG", pnginfo=info)
    open_by_drop(page, "ComfyUI_00001_.png", buf.getvalue(), "image/png", len(template["nodes"]))
    subgraph_id = template["definitions"]["subgraphs"][0]["id"]
    instance = evaluate(page, INSTANCE, 56)
    assert instance["type"] == subgraph_id and instance["subgraph"] is True
    notice = page.text_content("#notice")
    assert "unknown" not in notice and "Only the demo model is installed" in notice
    same_prompt_but_the_demo_files(graph_state(page), template)


def test_nested_subgraphs_and_unknown_inner_nodes(page):
    """FLUX.1 Depth: an instance inside an instance. It opens as one node; the notice names the
    node types inside the subgraphs that fluxloom lacks; saving keeps both definitions."""
    template = load_template("flux_depth_lora_example")
    open_by_drop(
        page, "depth.json", json.dumps(template).encode(), "application/json", len(template["nodes"])
    )
    assert evaluate(page, INSTANCE, 150)["subgraph"] is True
    notice = page.text_content("#notice")
    assert "unknown node types" in notice and "LotusConditioning" in notice
    assert "InstructPixToPixConditioning" in notice and "SetFirstSigma" not in notice  # that one exists
    saved = graph_state(page)
    defined = {d["id"] for d in template["definitions"]["subgraphs"]}
    assert {d["id"] for d in saved["definitions"]["subgraphs"]} == defined
    registry = nodes.load_all()
    assert to_api(saved, registry)["150:35"]["inputs"]["pixels"] == ["150:41:99", 0]


def test_missing_subgraph_definition_is_named(page):
    template = load_template("flux_dev_full_text_to_image")
    template["definitions"]["subgraphs"] = []
    open_by_drop(page, "broken.json", json.dumps(template).encode(), "application/json", 3)
    assert f"{FLUX_DEV} (a subgraph whose definition is missing)" in page.text_content("#notice")
