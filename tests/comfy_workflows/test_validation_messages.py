"""Validation that helps: an unknown node type says what it is (a custom node pack's node, a ComfyUI
API node, a subgraph whose definition is missing, a core ComfyUI node fluxloom lacks) and names
the nodes, through prepare_prompt (every entry point), `POST /prompt` and `fluxloom run`; a
subgraph that cannot be inlined is a workflow error naming the subgraph."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest

from server.prepare import prepare_prompt
from server.validation import ValidationError
from server.workflow_io import WorkflowError, to_api
from tests.comfy_workflows.conftest import load_template
from tests.comfy_workflows.test_templates_run import fluxloom
from tests.server.conftest import Api

SUBGRAPH = (
    "2523c08d-4c99-4b73-910c-62c873f124db"  # flux_dev_full_text_to_image's "Text to Image (Flux.1 Dev)"
)
MISSING = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
PACK = (
    "Node type 'UltimateSDUpscale' is from the custom node pack 'comfyui_ultimatesdupscale' (v1.3.0), "
    "which fluxloom does not have; node 60 ('Upscale')"
)
API_NODE = (
    "Node type 'FluxProUltraImageNode' is a ComfyUI API node (a paid cloud service of Black Forest Labs, "
    "run through comfy.org), which fluxloom does not run; node 61"
)
CORE = (
    "Node type 'Canny' is a core ComfyUI node (comfy-core v0.3.64) that fluxloom does not implement yet; "
    "node 62"
)
NO_DEFINITION = (
    f"Node type '{MISSING}' is a subgraph whose definition is missing from the workflow (its "
    "'definitions.subgraphs' has no entry with that id); save the workflow again from ComfyUI with the "
    "subgraph included; node 63"
)


def ui_node(nid: int, type_: str, title: str | None = None, **properties) -> dict:
    node = {"id": nid, "type": type_, "mode": 0, "inputs": [], "outputs": [], "properties": properties}
    return {**node, "title": title} if title else node


def with_strangers() -> dict:
    """flux_dev_full_text_to_image (which runs) with one node of each unknown family added."""
    workflow = load_template("flux_dev_full_text_to_image")
    workflow["nodes"] += [
        ui_node(60, "UltimateSDUpscale", "Upscale", cnr_id="comfyui_ultimatesdupscale", ver="1.3.0"),
        ui_node(61, "FluxProUltraImageNode"),
        ui_node(62, "Canny", cnr_id="comfy-core", ver="0.3.64"),
        ui_node(63, MISSING, cnr_id="comfy-core", ver="0.18.1"),
    ]
    return workflow


def messages(err: pytest.ExceptionInfo) -> dict[str, list[str]]:
    return {nid: [e["message"] for e in entry["errors"]] for nid, entry in err.value.node_errors.items()}


def test_each_unknown_family_is_named_with_its_nodes(app_runtime):
    with pytest.raises(ValidationError) as err:
        prepare_prompt(with_strangers(), app_runtime.registry, app_runtime.env)
    assert messages(err) == {"60": [PACK], "61": [API_NODE], "62": [CORE], "63": [NO_DEFINITION]}
    entry = err.value.node_errors["60"]
    assert entry["class_type"] == "UltimateSDUpscale"
    assert entry["errors"][0]["type"] == "missing_node_type" and entry["errors"][0]["details"] == ""
    assert entry["errors"][0]["extra_info"] == {"class_type": "UltimateSDUpscale"}


def test_template_with_a_missing_subgraph_definition(app_runtime):
    workflow = load_template("flux_dev_full_text_to_image")
    workflow["definitions"]["subgraphs"] = []
    with pytest.raises(ValidationError) as err:
        prepare_prompt(workflow, app_runtime.registry, app_runtime.env)
    (message,) = messages(err)["194"]
    assert message.startswith(f"Node type '{SUBGRAPH}' is a subgraph whose definition is missing")
    assert message.endswith("; node 194")


def test_template_with_core_nodes_fluxloom_lacks(app_runtime):
    with pytest.raises(ValidationError) as err:
        prepare_prompt(load_template("flux_canny_model_example"), app_runtime.registry, app_runtime.env)
    found = messages(err)
    assert found["18"] == [
        "Node type 'Canny' is a core ComfyUI node (comfy-core v0.3.64) that fluxloom does not implement "
        "yet; node 18"
    ]
    assert found["35"][0].startswith("Node type 'InstructPixToPixConditioning' is a core ComfyUI node")


def test_api_node_template(app_runtime):
    with pytest.raises(ValidationError) as err:
        prepare_prompt(load_template("api_bfl_flux_pro_t2i"), app_runtime.registry, app_runtime.env)
    assert messages(err)["11"] == [API_NODE.replace("node 61", "node 11")]


def test_api_prompt_with_its_workflow_beside_it_as_comfyui_frontend_sends(app_runtime, app_server):
    """ComfyUI's frontend sends the API prompt and the UI workflow (extra_pnginfo), which says
    where each node comes from; without it only the name is known."""
    workflow = with_strangers()
    prompt = to_api(workflow, app_runtime.registry)
    body = {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    answer = Api(app_server.url).post("/prompt", body)
    assert answer.status == 400
    errors = answer.json()["node_errors"]
    found = {nid: [e["message"] for e in entry["errors"]] for nid, entry in errors.items()}
    assert found == {"60": [PACK], "61": [API_NODE], "62": [CORE], "63": [NO_DEFINITION]}
    with pytest.raises(ValidationError) as err:
        prepare_prompt(prompt, app_runtime.registry, app_runtime.env)
    assert messages(err)["60"] == ["Node type 'UltimateSDUpscale' does not exist; node 60"]
    assert messages(err)["61"] == [API_NODE]  # an API node is told by its name alone


def self_containing() -> dict:
    """The template's subgraph holding an instance of itself."""
    workflow = load_template("flux_dev_full_text_to_image")
    definition = workflow["definitions"]["subgraphs"][0]
    definition["nodes"].append(ui_node(90, SUBGRAPH))
    return workflow


def test_subgraph_that_cannot_be_inlined_is_a_workflow_error_naming_it(app_runtime, app_server):
    with pytest.raises(WorkflowError) as err:
        prepare_prompt(self_containing(), app_runtime.registry, app_runtime.env)
    assert str(err.value) == "subgraph 'Text to Image (Flux.1 Dev)' contains itself (node 194:90)"
    broken = load_template("flux_dev_full_text_to_image")
    definition = broken["definitions"]["subgraphs"][0]
    definition["links"] = [{"id": 1, "origin_id": 45, "origin_slot": None, "target_id": 51, "target_slot": 1}]
    with pytest.raises(
        WorkflowError, match=r"^subgraph 'Text to Image \(Flux.1 Dev\)' \(node 194\) is malformed"
    ):
        prepare_prompt(broken, app_runtime.registry, app_runtime.env)
    answer = Api(app_server.url).post("/prompt", {"prompt": self_containing()})
    assert answer.status == 400
    assert answer.json()["error"]["type"] == "invalid_workflow"
    assert (
        "subgraph 'Text to Image (Flux.1 Dev)' contains itself (node 194:90)"
        in answer.json()["error"]["message"]
    )


def test_fluxloom_run_prints_them(demo_models, tmp_path):
    """Exit 2 (invalid), and each message on stderr; the self-containing subgraph likewise."""
    strangers, looped = tmp_path / "strangers.json", tmp_path / "looped.json"
    strangers.write_text(json.dumps(with_strangers()))
    looped.write_text(json.dumps(self_containing()))
    common = ["--models", str(demo_models), "--output-dir", str(tmp_path / "out")]
    procs = [
        subprocess.Popen(
            [*fluxloom(), "run", str(path), *common],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in (strangers, looped)
    ]
    (rc1, err1), (rc2, err2) = [(p.communicate(timeout=300)[1], p.returncode)[::-1] for p in procs]
    assert rc1 == 2, err1
    for message in (PACK, API_NODE, CORE, NO_DEFINITION):
        assert message in err1
    assert rc2 == 2 and "subgraph 'Text to Image (Flux.1 Dev)' contains itself (node 194:90)" in err2


def test_the_template_itself_is_left_unchanged_by_the_checks(app_runtime):
    workflow = with_strangers()
    before = copy.deepcopy(workflow)
    with pytest.raises(ValidationError):
        prepare_prompt(workflow, app_runtime.registry, app_runtime.env)
    assert workflow == before


def test_with_a_real_model_installed_the_template_lists_the_choices_instead(demo_models, tmp_path):
    """The demo stands in only when it is the only model: with one more (a transformer under
    another name), the template's file names fail validation, listing what is installed."""
    from server.runtime import RuntimeConfig, create_runtime

    models = tmp_path / "models"
    for src in demo_models.rglob("*"):
        if src.is_file():
            (models / src.relative_to(demo_models)).parent.mkdir(parents=True, exist_ok=True)
            (models / src.relative_to(demo_models)).symlink_to(src)
    mine = models / "diffusion_models" / "my-flux-dev.safetensors"
    mine.symlink_to(demo_models / "diffusion_models" / "fluxloom-demo.safetensors")
    runtime = create_runtime(
        RuntimeConfig(models_dir=models, output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                      temp_dir=tmp_path / "tmp", ensure_demo_model=False)
    )  # fmt: skip
    with pytest.raises(ValidationError) as err:
        prepare_prompt(load_template("flux_dev_full_text_to_image"), runtime.registry, runtime.env)
    (error,) = err.value.node_errors["194:46"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"].startswith("unet_name: 'flux1-dev.safetensors' not in [")
    assert "my-flux-dev.safetensors" in error["details"]
    assert set(err.value.node_errors) == {"194:45", "194:46", "194:47"}  # VAE, UNET, CLIP loaders
