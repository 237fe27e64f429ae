"""UI-format (litegraph, as ComfyUI saves it) → API-format conversion, PNG metadata, overrides."""

import json

import pytest
from PIL import Image

from nodes.image import png_metadata
from server.executor import Executor
from server.workflow_io import (
    WorkflowError,
    apply_overrides,
    load_workflow,
    parse_override,
    read_png_workflow,
    to_api,
    ui_to_api,
)
from tests.engine.engine_nodes import registry


def ui_node(nid, type_, inputs=(), outputs=(), widgets=(), title=None, mode=0, order=0):
    node = {
        "id": nid,
        "type": type_,
        "pos": [nid * 10, 0],
        "size": [200, 80],
        "flags": {},
        "order": order,
        "mode": mode,
        "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
        "outputs": [
            {"name": n, "type": t, "links": links, "slot_index": i} for i, (n, t, links) in enumerate(outputs)
        ],
        "properties": {"Node name for S&R": type_},
        "widgets_values": list(widgets),
    }
    if title:
        node["title"] = title
    return node


def ui_workflow():
    """Node ids deliberately not in execution order (the sink has the lowest id)."""
    nodes = [
        ui_node(1, "Record", inputs=[("value", "INT", 3)], title="Result"),
        ui_node(
            7, "Add", inputs=[("a", "INT", 1), ("b", "INT", 2)], outputs=[("sum", "INT", [3])], widgets=[5]
        ),
        ui_node(12, "Const", outputs=[("value", "INT", [1, 2])], widgets=[20], title="Base"),
        ui_node(
            4,
            "Widgets",
            outputs=[("summary", "STRING", [4])],
            widgets=[42, "randomize", 2.5, "hi\nthere", True, "b"],
            title="Knobs",
        ),
        ui_node(3, "Record", inputs=[("value", "STRING", 4)]),
    ]
    links = [
        [1, 12, 0, 7, 0, "INT"],
        [2, 12, 0, 7, 1, "INT"],
        [3, 7, 0, 1, 0, "INT"],
        [4, 4, 0, 3, 0, "STRING"],
    ]
    return {
        "last_node_id": 12,
        "last_link_id": 4,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def test_ui_to_api_converts_widgets_links_and_titles():
    api = ui_to_api(ui_workflow(), registry)
    assert api["7"] == {
        "class_type": "Add",
        "inputs": {"bias": 5, "a": ["12", 0], "b": ["12", 0]},
        "_meta": {"title": "Add"},
    }
    assert api["12"]["_meta"]["title"] == "Base" and api["12"]["inputs"] == {"value": 20}
    # the seed's control value ("randomize") is skipped, the next widget gets the next value
    assert api["4"]["inputs"] == {"seed": 42, "scale": 2.5, "text": "hi\nthere", "flag": True, "mode": "b"}
    assert api["1"]["inputs"] == {"value": ["7", 0]}


def test_converted_workflow_runs(tmp_path):
    from nodes.base import NodeEnv

    result = Executor(registry, NodeEnv()).execute(to_api(ui_workflow(), registry), "ui")
    assert result.ok
    assert result.outputs["1"] == {"value": [45]}
    assert result.outputs["3"] == {"value": ["42|2.5|hi\nthere|True|b"]}
    assert result.executed.index("12") < result.executed.index("7") < result.executed.index("1")


def test_object_links_and_dict_widget_values():
    wf = ui_workflow()
    wf["links"] = [
        dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], link, strict=True))
        for link in wf["links"]
    ]
    wf["nodes"][2]["widgets_values"] = {"value": 9}
    api = ui_to_api(wf, registry)
    assert api["7"]["inputs"]["a"] == ["12", 0] and api["12"]["inputs"] == {"value": 9}


def test_muted_and_bypassed_nodes():
    wf = ui_workflow()
    wf["nodes"][1]["mode"] = 4  # bypass Add: Record gets Add's first INT input, i.e. Const
    api = ui_to_api(wf, registry)
    assert "7" not in api and api["1"]["inputs"]["value"] == ["12", 0]
    wf["nodes"][1]["mode"] = 2  # mute Add: Record loses its input
    api = ui_to_api(wf, registry)
    assert "7" not in api and "value" not in api["1"]["inputs"]


def test_png_roundtrip(tmp_path):
    wf = ui_workflow()
    path = tmp_path / "out.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_metadata(ui_to_api(wf, registry), wf))
    assert read_png_workflow(path) == wf
    only_prompt = tmp_path / "prompt.png"
    Image.new("RGB", (8, 8)).save(only_prompt, pnginfo=png_metadata({"1": {"class_type": "Const"}}, None))
    assert read_png_workflow(only_prompt) == {"1": {"class_type": "Const"}}
    bare = tmp_path / "bare.png"
    Image.new("RGB", (8, 8)).save(bare)
    with pytest.raises(WorkflowError, match="carries no workflow"):
        read_png_workflow(bare)
    assert load_workflow(path) == wf


def test_load_workflow_errors(tmp_path):
    with pytest.raises(WorkflowError, match="no workflow file or shipped workflow named 'nope'"):
        load_workflow("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorkflowError, match="not a readable JSON workflow"):
        load_workflow(bad)


def test_overrides_by_id_and_title():
    api = ui_to_api(ui_workflow(), registry)
    out = apply_overrides(
        api,
        dict(
            [
                parse_override("Base.value=3"),
                parse_override("7.bias=-1"),
                parse_override("Knobs.text=plain words"),
            ]
        ),
    )
    assert out["12"]["inputs"]["value"] == 3 and out["7"]["inputs"]["bias"] == -1
    assert out["4"]["inputs"]["text"] == "plain words"
    assert api["12"]["inputs"]["value"] == 20  # the original is untouched
    with pytest.raises(WorkflowError, match="no node has id or title 'Nope'"):
        apply_overrides(api, {"Nope.value": 1})
    dup = json.loads(json.dumps(api))
    dup["3"]["_meta"]["title"] = "Result"
    with pytest.raises(WorkflowError, match="names nodes 1, 3"):
        apply_overrides(dup, {"Result.value": 1})
    with pytest.raises(WorkflowError, match="NODE.INPUT=VALUE"):
        parse_override("novalue")


def test_frontend_only_nodes_reroute_primitive_and_note():
    """ComfyUI saves Reroute, PrimitiveNode and Note nodes in the workflow; its frontend never
    sends them to the server. Reroutes (also chained) pass their source through; a PrimitiveNode
    has already written its value into the converted widget it feeds; notes are dropped."""
    wf = ui_workflow()
    # Add.a: Const → Reroute 20 → Reroute 21 → Add; Add.bias is a converted widget fed by a primitive.
    wf["nodes"][1]["inputs"].append({"name": "bias", "type": "INT", "link": 12, "widget": {"name": "bias"}})
    wf["nodes"] += [
        ui_node(20, "Reroute", inputs=[("", "*", 10)], outputs=[("", "INT", [11])]),
        ui_node(21, "Reroute", inputs=[("", "*", 11)], outputs=[("", "INT", [1])]),
        ui_node(22, "PrimitiveNode", outputs=[("INT", "INT", [12])], widgets=[5, "fixed"]),
        ui_node(23, "Note", widgets=["remember to change the seed"]),
        ui_node(24, "MarkdownNote", widgets=["# notes"]),
    ]
    wf["links"][0] = [1, 21, 0, 7, 0, "INT"]
    wf["links"] += [[10, 12, 0, 20, 0, "INT"], [11, 20, 0, 21, 0, "INT"], [12, 22, 0, 7, 2, "INT"]]
    api = ui_to_api(wf, registry)
    assert set(api) == {"1", "3", "4", "7", "12"}
    assert api["7"]["inputs"] == {"bias": 5, "a": ["12", 0], "b": ["12", 0]}
    from nodes.base import NodeEnv

    result = Executor(registry, NodeEnv()).execute(api, "virtual")
    assert result.ok and result.outputs["1"] == {"value": [45]}
    # Muting a frontend-only node changes nothing: ComfyUI follows virtual nodes whatever their mode.
    for n in wf["nodes"][-5:]:
        n["mode"] = 2
    assert ui_to_api(wf, registry) == api


def test_malformed_ui_workflows_raise_workflow_error():
    broken_link = ui_workflow()
    broken_link["links"][0] = {"id": 1, "origin_id": 12}  # object form without its slots
    not_a_node = ui_workflow()
    not_a_node["nodes"][0]["inputs"] = ["value"]
    for wf in (broken_link, not_a_node):
        with pytest.raises(WorkflowError, match="malformed UI workflow"):
            ui_to_api(wf, registry)
    # A link from a bypassed node's output slot that the node does not have: the input is dropped.
    bad_slot = ui_workflow()
    bad_slot["nodes"][1]["mode"] = 4
    bad_slot["links"][2] = [3, 7, 5, 1, 0, "INT"]
    assert ui_to_api(bad_slot, registry)["1"]["inputs"] == {}


def test_overrides_leave_malformed_nodes_to_validation():
    prompt = {"1": 5, "2": {"class_type": "Const", "inputs": {"value": 1}, "_meta": None}}
    assert apply_overrides(prompt, {}) == prompt
    assert apply_overrides(prompt, {"2.value": 3})["2"]["inputs"] == {"value": 3}
    with pytest.raises(WorkflowError, match="node 1 is not a node object"):
        apply_overrides(prompt, {"1.value": 3})
    with pytest.raises(WorkflowError, match="no node has id or title 'T'"):
        apply_overrides(prompt, {"T.value": 3})


def test_override_of_an_undeclared_input_is_an_error_with_a_registry():
    api = ui_to_api(ui_workflow(), registry)
    # A typo ("sed" for "seed") would otherwise be ignored by validation and run the old value.
    with pytest.raises(WorkflowError, match=r"node 4 \(Widgets\) has no input 'sed' \(inputs: seed, scale"):
        apply_overrides(api, {"Knobs.sed": 7}, registry)
    assert apply_overrides(api, {"Knobs.seed": 7}, registry)["4"]["inputs"]["seed"] == 7
    odd = {**api, "9": {"class_type": ["x"], "inputs": {}}}
    assert apply_overrides(odd, {"9.value": 1}, registry)["9"]["inputs"] == {"value": 1}


def test_widget_values_follow_required_then_optional_order():
    """ComfyUI and the canvas create (and save) required widgets before optional ones, whatever
    the declaration order; an optional widget declared first must not take the first value."""
    from nodes.base import Input, Int, NodeRegistry, String

    reg = NodeRegistry()
    reg.node(
        "Mixed",
        category="t",
        inputs=[Input("note", String(), optional=True), Input("count", Int(default=1))],
        output_node=True,
    )(lambda ctx, count, note="": None)
    wf = {"nodes": [ui_node(1, "Mixed", widgets=[3, "hello"])], "links": []}
    assert ui_to_api(wf, reg)["1"]["inputs"] == {"count": 3, "note": "hello"}
