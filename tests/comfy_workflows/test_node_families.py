"""Unknown node types explained: custom node packs, ComfyUI API nodes, subgraphs whose definition is
missing, core ComfyUI nodes fluxloom lacks; on hand-made nodes and on the template corpus."""

from __future__ import annotations

import json
from importlib import resources

from server.node_families import api_provider, describe_unknown, explain_unknown, ui_nodes_by_type
from server.workflow_io import ui_to_api
from tests.comfy_workflows.conftest import load_template, template_names


def ui(nid, type_, **properties):
    return {"id": nid, "type": type_, "mode": 0, "properties": {"Node name for S&R": type_, **properties}}


def test_custom_node_pack_with_its_version():
    nodes = [
        ui(7, "FooSampler", cnr_id="comfyui-foo", ver="1.2.0"),
        ui(3, "FooSampler", cnr_id="comfyui-foo"),
    ]
    assert describe_unknown("FooSampler", nodes) == (
        "Node type 'FooSampler' is from the custom node pack 'comfyui-foo' (v1.2.0), which fluxloom "
        "does not have; nodes 3, 7"
    )


def test_custom_node_pack_installed_from_github():
    nodes = [ui(4, "Bar", aux_id="someone/comfyui-bar", ver="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567")]
    assert describe_unknown("Bar", nodes) == (
        "Node type 'Bar' is from the custom node pack 'someone/comfyui-bar' (from GitHub, commit "
        "0a1b2c3), which fluxloom does not have; node 4"
    )


def test_core_comfyui_node_not_implemented_yet():
    message = describe_unknown("LatentRotate", [ui(12, "LatentRotate", cnr_id="comfy-core", ver="0.3.40")])
    assert message == (
        "Node type 'LatentRotate' is a core ComfyUI node (comfy-core v0.3.40) that fluxloom does not "
        "implement yet; node 12"
    )


def test_unknown_type_without_provenance_suggests_a_known_one():
    message = describe_unknown("KSampler ", node_ids=["5"], known=["KSampler", "VAEDecode"])
    assert message == "Node type 'KSampler ' does not exist (did you mean 'KSampler'?); node 5"
    assert (
        describe_unknown("Zzz", node_ids=["5"], known=["KSampler"])
        == "Node type 'Zzz' does not exist; node 5"
    )


def test_titles_name_the_nodes():
    node = {**ui(8, "FooLoader", cnr_id="comfyui-foo"), "title": "My loader"}
    assert describe_unknown("FooLoader", [node]).endswith("; node 8 ('My loader')")


def test_api_node_of_a_template(comfy_registry):
    workflow = load_template("api_bfl_flux_pro_t2i")
    prompt = ui_to_api(workflow, comfy_registry)
    messages = explain_unknown(prompt, comfy_registry, workflow)
    api_nodes = [nid for nid, n in prompt.items() if n["class_type"] == "FluxProUltraImageNode"]
    assert api_nodes and set(messages) == set(api_nodes)
    assert messages[api_nodes[0]] == (
        "Node type 'FluxProUltraImageNode' is a ComfyUI API node (a paid cloud service of Black Forest "
        f"Labs, run through comfy.org), which fluxloom does not run; node {api_nodes[0]}"
    )


def test_subgraph_whose_definition_is_missing(comfy_registry):
    workflow = load_template("flux_dev_full_text_to_image")
    workflow["definitions"]["subgraphs"] = []
    prompt = ui_to_api(workflow, comfy_registry)
    assert explain_unknown(prompt, comfy_registry, workflow) == {
        "194": "Node type '2523c08d-4c99-4b73-910c-62c873f124db' is a subgraph whose definition is missing "
        "from the workflow (its 'definitions.subgraphs' has no entry with that id); save the workflow "
        "again from ComfyUI with the subgraph included; node 194"
    }


def test_nodes_inside_subgraphs_are_named_by_path(comfy_registry):
    # FLUX.2's template: core nodes fluxloom's test registry lacks, inside subgraph instance 68.
    workflow = load_template("image_flux2")
    prompt = ui_to_api(workflow, comfy_registry)
    messages = explain_unknown(prompt, comfy_registry, workflow)
    assert messages["68:48"] == (
        "Node type 'Flux2Scheduler' is a core ComfyUI node (comfy-core v0.3.71) that fluxloom does not "
        "implement yet; node 68:48"
    )
    primitives = [nid for nid, n in prompt.items() if n["class_type"] == "PrimitiveInt"]
    assert len(primitives) == 2 and messages[primitives[0]] == messages[primitives[1]]
    assert messages[primitives[0]].endswith(f"; nodes {', '.join(primitives)}")
    assert all(prompt[nid]["class_type"] not in comfy_registry for nid in messages)


def test_api_prompt_without_a_workflow(comfy_registry):
    prompt = {
        "1": {"class_type": "GeminiImageNode", "inputs": {}},
        "2": {"class_type": "VAEDecod", "inputs": {}},
        "3": {"class_type": "VAEDecode", "inputs": {}},
    }
    assert explain_unknown(prompt, comfy_registry) == {
        "1": "Node type 'GeminiImageNode' is a ComfyUI API node (a paid cloud service of Google, run through "
        "comfy.org), which fluxloom does not run; node 1",
        "2": "Node type 'VAEDecod' does not exist (did you mean 'VAEDecode'?); node 2",
    }


def corpus_types():
    """Node types of the open (no "API" tag) templates, and of the API ones."""
    index = json.loads(
        (resources.files("comfyui_workflow_templates_json") / "templates/index.json").read_text()
    )
    tags = {t["name"]: t.get("tags") or [] for category in index for t in category.get("templates", [])}
    open_types, api_types = set(), set()
    for name in template_names():
        workflow = load_template(name) if name in tags else None
        if isinstance(workflow, dict) and "nodes" in workflow:
            (api_types if "API" in tags[name] else open_types).update(ui_nodes_by_type(workflow))
    return open_types, api_types


def test_api_nodes_are_told_apart_from_core_nodes_across_the_corpus():
    open_types, api_types = corpus_types()
    # API nodes that some open templates use too; every other node of an open template is not one.
    assert {t for t in open_types if api_provider(t)} == {
        "ByteDance2ReferenceNodeV2",
        "ClarityCrystalUpscaleNode",
        "GeminiVideoOmniV2",
        "KlingTryOnNode",
    }
    assert api_provider("FluxGuidance") is None and api_provider("WanImageToVideo") is None
    # Of the nodes only API templates use, those not recognised are core utilities (and one pack).
    unrecognised = {t for t in api_types - open_types if not api_provider(t) and "-" not in t}
    assert unrecognised == {
        "AILab_QwenVL",
        "AudioAdjustVolume",
        "AudioMerge",
        "BatchMasksNode",
        "ImageBatch",
        "ImageCompositor",
        "ImageRemoveAlpha+",
        "Load3D",
        "Preview3D",
        "ResizeImagesByLongerEdge",
        "SaveSVGNode",
        "SaveText",
        "SaveWEBM",
        "SplitImageWithAlpha",
        "StringCompare",
    }
