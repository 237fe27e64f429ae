"""ComfyUI subgraphs inlined into plain nodes (ids `outer:inner`), on small workflows of the engine's
test nodes (Const, Add, Widgets, Record) so that the result can also be validated and run."""

from __future__ import annotations

import copy
import uuid

import pytest

from nodes.base import NodeEnv
from server.cache import OutputCache
from server.executor import Executor
from server.subgraphs import inline_subgraphs
from server.validation import ValidationError, format_errors, validate_prompt
from server.workflow_io import WorkflowError, to_api, ui_to_api
from tests.engine.engine_nodes import registry

INNER = "5a0e7c5e-1111-4c4c-8888-000000000001"  # subgraph ids are UUIDs, as ComfyUI makes them
OUTER = "5a0e7c5e-2222-4c4c-8888-000000000002"


def node(nid, type_, inputs=(), outputs=(), widgets=(), mode=0, title=None, **extra):
    """A UI node; inputs are (name, type, link) or (name, type, link, widget name)."""
    n = {
        "id": nid,
        "type": type_,
        "pos": [0, 0],
        "size": [200, 80],
        "flags": {},
        "order": 0,
        "mode": mode,
        "inputs": [
            {"name": i[0], "type": i[1], "link": i[2], **({"widget": {"name": i[3]}} if len(i) > 3 else {})}
            for i in inputs
        ],
        "outputs": [{"name": name, "type": t, "links": []} for name, t in outputs],
        "properties": {"Node name for S&R": type_, **extra.pop("properties", {})},
        "widgets_values": list(widgets),
        **extra,
    }
    if title:
        n["title"] = title
    return n


def link(lid, origin, o_slot, target, t_slot, type_="INT"):
    return {
        "id": lid,
        "origin_id": origin,
        "origin_slot": o_slot,
        "target_id": target,
        "target_slot": t_slot,
        "type": type_,
    }


def definition(sid, name, nodes, links, inputs=(), outputs=(), subgraphs=()):
    """A subgraph definition as ComfyUI's frontend saves it; inputs/outputs are (name, type)."""
    d = {
        "id": sid,
        "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": 0, "lastLinkId": 0, "lastRerouteId": 0},
        "revision": 0,
        "config": {},
        "name": name,
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [500, 0, 120, 60]},
        "inputs": [{"id": str(uuid.uuid4()), "name": n, "type": t, "linkIds": []} for n, t in inputs],
        "outputs": [{"id": str(uuid.uuid4()), "name": n, "type": t, "linkIds": []} for n, t in outputs],
        "widgets": [],
        "nodes": nodes,
        "groups": [],
        "links": links,
        "extra": {},
    }
    for lk in links:
        if lk["origin_id"] == -10:
            d["inputs"][lk["origin_slot"]]["linkIds"].append(lk["id"])
        if lk["target_id"] == -20:
            d["outputs"][lk["target_slot"]]["linkIds"].append(lk["id"])
    if subgraphs:
        d["definitions"] = {"subgraphs": list(subgraphs)}
    return d


def workflow(nodes, links, subgraphs=()):
    return {
        "last_node_id": 99,
        "last_link_id": 99,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
        "definitions": {"subgraphs": list(subgraphs)},
    }


def adder(promoted=(), inner_bias=5):
    """Subgraph "Adder": out = a + Const(value) with bias. Its inputs: a (socket), value (feeds the
    inner Const's widget, so it is promoted to a widget on the instance)."""
    return definition(
        INNER,
        "Adder",
        nodes=[
            node(
                1, "Const", inputs=[("value", "INT", 12, "value")], outputs=[("value", "INT")], widgets=[20]
            ),
            node(
                2,
                "Add",
                inputs=[("a", "INT", 10), ("b", "INT", 11)],
                outputs=[("sum", "INT")],
                widgets=[inner_bias],
            ),
        ],
        links=[
            link(10, -10, 0, 2, 0),
            link(11, 1, 0, 2, 1),
            link(12, -10, 1, 1, 0),
            link(13, 2, 0, -20, 0),
        ],
        inputs=[("a", "INT"), ("value", "INT")],
        outputs=[("sum", "INT")],
    )


def instance(nid, sid, a_link, widgets=(), mode=0, **extra):
    return node(
        nid, sid, inputs=[("a", "INT", a_link)], outputs=[("sum", "INT")], widgets=widgets, mode=mode, **extra
    )


def adder_workflow(**instance_kwargs):
    """Const(7) → Adder instance 5 → Record 9."""
    return workflow(
        nodes=[
            node(3, "Const", outputs=[("value", "INT")], widgets=[7], title="Seven"),
            instance(5, INNER, 1, **instance_kwargs),
            node(9, "Record", inputs=[("value", "INT", 2)], title="Result"),
        ],
        links=[[1, 3, 0, 5, 0, "INT"], [2, 5, 0, 9, 0, "INT"]],
        subgraphs=[adder()],
    )


def run(prompt, cache=None):
    result = Executor(registry, NodeEnv(), cache).execute(prompt, "p")
    assert result.ok, result
    return result


def test_links_cross_the_boundary_both_ways_and_ids_name_the_inner_node():
    api = ui_to_api(adder_workflow(), registry)
    assert set(api) == {"3", "5:1", "5:2", "9"}  # the instance itself is gone
    # into the subgraph: the inner Add takes the outer Const; out of it: Record takes the inner Add
    assert api["5:2"]["inputs"] == {"bias": 5, "a": ["3", 0], "b": ["5:1", 0]}
    assert api["9"]["inputs"] == {"value": ["5:2", 0]}
    assert api["5:1"]["inputs"] == {"value": 20}  # the instance input "value" is unconnected
    assert api["5:2"]["_meta"] == {"title": "Add", "subgraph": "Adder"}
    assert api["3"]["_meta"] == {"title": "Seven"}
    assert run(api).outputs["9"] == {"value": [7 + 20 + 5]}


def test_promoted_widget_value_overrides_the_inner_one_per_instance():
    wf = adder_workflow(widgets=[100])
    wf["nodes"].append(instance(6, INNER, 1, widgets=[200]))
    wf["nodes"].append(node(10, "Record", inputs=[("value", "INT", 3)]))
    wf["links"].append([3, 6, 0, 10, 0, "INT"])
    before = copy.deepcopy(wf)
    api = ui_to_api(wf, registry)
    # one definition, two instances: distinct ids, each with its own promoted value
    assert api["5:1"]["inputs"] == {"value": 100} and api["6:1"]["inputs"] == {"value": 200}
    assert api["6:2"]["inputs"]["a"] == ["3", 0] and api["10"]["inputs"] == {"value": ["6:2", 0]}
    assert wf == before  # the shared definition is not changed
    result = run(api)
    assert result.outputs["9"] == {"value": [112]} and result.outputs["10"] == {"value": [212]}


def test_promoted_values_saved_by_name():
    # recent frontends also save them by subgraph input name; those win over the positions
    api = ui_to_api(adder_workflow(widgets=[100], widgets_values_named={"value": 77}), registry)
    assert api["5:1"]["inputs"] == {"value": 77}


def test_proxied_widgets_keep_the_inner_node_values():
    # proxyWidgets only shows inner widgets on the instance: ComfyUI keeps their values on the
    # inner node and saves no value for them on the instance.
    wf = adder_workflow(properties={"proxyWidgets": [["1", "value"], ["2", "bias"]]})
    api = ui_to_api(wf, registry)
    assert api["5:1"]["inputs"] == {"value": 20} and api["5:2"]["inputs"]["bias"] == 5


def test_connected_instance_input_feeds_the_inner_widget():
    wf = adder_workflow(widgets=[100])
    wf["nodes"][1]["inputs"].append({"name": "value", "type": "INT", "link": 4, "widget": {"name": "value"}})
    wf["nodes"].append(node(4, "Const", outputs=[("value", "INT")], widgets=[-1]))
    wf["links"].append([4, 4, 0, 5, 1, "INT"])
    api = ui_to_api(wf, registry)
    assert api["5:1"]["inputs"] == {"value": ["4", 0]}  # the link wins over the promoted value
    assert run(api).outputs["9"] == {"value": [7 - 1 + 5]}


def test_widget_promoted_into_a_seed_with_its_control_value():
    sub = definition(
        INNER,
        "Knobs",
        nodes=[
            node(
                1,
                "Widgets",
                inputs=[("seed", "INT", 10, "seed")],
                outputs=[("summary", "STRING")],
                widgets=[1, "randomize", 2.5, "x", False, "a"],
            )
        ],
        links=[link(10, -10, 0, 1, 0), link(11, 1, 0, -20, 0, "STRING")],
        inputs=[("seed", "INT")],
        outputs=[("summary", "STRING")],
    )
    wf = workflow(
        nodes=[
            node(5, INNER, outputs=[("summary", "STRING")], widgets=[42, "fixed"]),  # an older save
            node(9, "Record", inputs=[("value", "STRING", 1)]),
        ],
        links=[[1, 5, 0, 9, 0, "STRING"]],
        subgraphs=[sub],
    )
    api = ui_to_api(wf, registry)
    assert api["5:1"]["inputs"] == {"seed": 42, "scale": 2.5, "text": "x", "flag": False, "mode": "a"}


def nested_workflow(outer_widgets=(), inner_widgets=()):
    """Instance 5 of "Outer", which holds instance 3 of "Adder" fed by Outer's inputs."""
    outer = definition(
        OUTER,
        "Outer",
        nodes=[
            node(
                3,
                INNER,
                inputs=[("a", "INT", 20), ("value", "INT", 21, "value")],
                outputs=[("sum", "INT")],
                widgets=inner_widgets,
            )
        ],
        links=[link(20, -10, 0, 3, 0), link(21, -10, 1, 3, 1), link(22, 3, 0, -20, 0)],
        inputs=[("x", "INT"), ("value", "INT")],
        outputs=[("total", "INT")],
        subgraphs=[adder()],
    )
    return workflow(
        nodes=[
            node(2, "Const", outputs=[("value", "INT")], widgets=[1]),
            node(5, OUTER, inputs=[("x", "INT", 1)], outputs=[("total", "INT")], widgets=outer_widgets),
            node(9, "Record", inputs=[("value", "INT", 2)]),
        ],
        links=[[1, 2, 0, 5, 0, "INT"], [2, 5, 0, 9, 0, "INT"]],
        subgraphs=[outer],
    )


def test_nested_subgraphs_get_path_ids_and_pass_links_through_both_levels():
    api = ui_to_api(nested_workflow(), registry)
    assert set(api) == {"2", "5:3:1", "5:3:2", "9"}
    assert api["5:3:2"]["inputs"] == {"bias": 5, "a": ["2", 0], "b": ["5:3:1", 0]}
    assert api["9"]["inputs"] == {"value": ["5:3:2", 0]}
    assert api["5:3:1"]["_meta"]["subgraph"] == "Outer › Adder"
    assert run(api).outputs["9"] == {"value": [1 + 20 + 5]}


@pytest.mark.parametrize(
    ("outer", "inner", "value"),
    [((), (), 20), ((), (30,), 30), ((40,), (30,), 40), ((40,), (), 40)],
)
def test_nested_promoted_values_the_outermost_one_wins(outer, inner, value):
    api = ui_to_api(nested_workflow(outer, inner), registry)
    assert api["5:3:1"]["inputs"] == {"value": value}


def test_subgraph_output_wired_straight_from_its_input():
    passthrough = definition(
        INNER,
        "Pass",
        nodes=[],
        links=[link(10, -10, 0, -20, 0)],
        inputs=[("in", "INT")],
        outputs=[("out", "INT")],
    )
    wf = workflow(
        nodes=[
            node(3, "Const", outputs=[("value", "INT")], widgets=[7]),
            node(5, INNER, inputs=[("in", "INT", 1)], outputs=[("out", "INT")]),
            node(9, "Record", inputs=[("value", "INT", 2)]),
        ],
        links=[[1, 3, 0, 5, 0, "INT"], [2, 5, 0, 9, 0, "INT"]],
        subgraphs=[passthrough],
    )
    assert ui_to_api(wf, registry) == {
        "3": {"class_type": "Const", "inputs": {"value": 7}, "_meta": {"title": "Const"}},
        "9": {"class_type": "Record", "inputs": {"value": ["3", 0]}, "_meta": {"title": "Record"}},
    }


def test_bypassed_instance_passes_its_input_through():
    api = ui_to_api(adder_workflow(mode=4), registry)
    assert set(api) == {"3", "9"}  # none of its nodes run
    assert api["9"]["inputs"] == {"value": ["3", 0]}


def test_muted_instance_feeds_nothing():
    api = ui_to_api(adder_workflow(mode=2), registry)
    assert set(api) == {"3", "9"} and api["9"]["inputs"] == {}
    with pytest.raises(ValidationError) as err:
        validate_prompt(api, registry)
    assert err.value.node_errors["9"]["errors"][0]["type"] == "required_input_missing"


def test_bypassed_and_muted_nodes_inside_a_subgraph():
    wf = adder_workflow()
    wf["definitions"]["subgraphs"][0]["nodes"][1]["mode"] = 4  # bypass the inner Add: its first INT input
    api = ui_to_api(wf, registry)
    assert "5:2" not in api and api["9"]["inputs"] == {"value": ["3", 0]}
    wf["definitions"]["subgraphs"][0]["nodes"][0]["mode"] = 2  # mute the inner Const
    wf["definitions"]["subgraphs"][0]["nodes"][1]["mode"] = 0
    api = ui_to_api(wf, registry)
    assert "5:1" not in api and api["5:2"]["inputs"] == {"bias": 5, "a": ["3", 0]}


def test_error_inside_a_subgraph_names_the_inner_node():
    wf = adder_workflow()
    wf["definitions"]["subgraphs"][0]["nodes"][1]["widgets_values"] = [5000]  # bias is -1000..1000
    api = ui_to_api(wf, registry)
    with pytest.raises(ValidationError) as err:
        validate_prompt(api, registry)
    assert list(err.value.node_errors) == ["5:2"]
    assert err.value.node_errors["5:2"]["errors"][0]["type"] == "value_bigger_than_max"
    assert "node 5:2 (Add, 'Add')" in format_errors(err.value.as_json(), api)
    assert api["5:2"]["_meta"]["subgraph"] == "Adder"


def test_unconnected_socket_input_of_an_instance_is_reported_on_the_inner_node():
    wf = adder_workflow()
    wf["nodes"][1]["inputs"] = []  # instance input "a" left unconnected
    with pytest.raises(ValidationError) as err:
        validate_prompt(ui_to_api(wf, registry), registry)
    assert err.value.node_errors["5:2"]["errors"][0]["type"] == "required_input_missing"


def test_missing_definition_is_left_for_validation_to_report():
    wf = adder_workflow()
    wf["definitions"]["subgraphs"] = []
    api = ui_to_api(wf, registry)
    assert api["5"]["class_type"] == INNER and api["9"]["inputs"] == {"value": ["5", 0]}
    with pytest.raises(ValidationError) as err:
        validate_prompt(api, registry)
    assert err.value.node_errors["5"]["errors"][0]["type"] == "missing_node_type"


def test_subgraph_that_contains_itself_is_a_clear_error():
    wf = adder_workflow()
    sub = wf["definitions"]["subgraphs"][0]
    sub["nodes"].append(node(3, INNER, inputs=[("a", "INT", None)], outputs=[("sum", "INT")]))
    with pytest.raises(WorkflowError, match="subgraph 'Adder' contains itself \\(node 5:3\\)"):
        ui_to_api(wf, registry)


def test_workflow_without_instances_is_returned_as_is():
    wf = adder_workflow()
    wf["nodes"] = [n for n in wf["nodes"] if n["type"] != INNER]
    assert inline_subgraphs(wf, registry) is wf


def test_api_prompt_from_comfyui_with_path_ids_passes_through_and_caches():
    # What ComfyUI's frontend sends for adder_workflow: inner ids already "5:1", "5:2".
    prompt = {
        "3": {"class_type": "Const", "inputs": {"value": 7}, "_meta": {"title": "Seven"}},
        "5:1": {"class_type": "Const", "inputs": {"value": 20}, "_meta": {"title": "Const"}},
        "5:2": {
            "class_type": "Add",
            "inputs": {"a": ["3", 0], "b": ["5:1", 0], "bias": 5},
            "_meta": {"title": "Add"},
        },
        "9": {"class_type": "Record", "inputs": {"value": ["5:2", 0]}, "_meta": {"title": "Result"}},
    }
    assert to_api(prompt, registry) is prompt
    converted = ui_to_api(adder_workflow(), registry)
    assert {k: v["inputs"] for k, v in converted.items()} == {k: v["inputs"] for k, v in prompt.items()}
    cache = OutputCache(2**20)
    first = run(prompt, cache)
    assert first.outputs["9"] == {"value": [32]} and "5:2" in first.executed
    # the same workflow converted again gives the same ids and signatures: all cached
    second = run(ui_to_api(adder_workflow(), registry), cache)
    assert second.executed == [] and set(second.cached) == {"3", "5:1", "5:2", "9"}
