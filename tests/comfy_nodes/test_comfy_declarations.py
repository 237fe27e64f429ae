"""Every ComfyUI node fluxloom implements here declares what ComfyUI declares (input names and
order, socket types, widget defaults, ranges and combo choices, outputs, display name, category),
so that ComfyUI workflows convert and validate unchanged: checked against the reference
declarations of tests/comfy_workflows/conftest.py (read from ComfyUI's source), against the few
more below, and against the FLUX.1 templates of ComfyUI's template package."""

from __future__ import annotations

import pytest

import nodes
from nodes.base import Combo, Float, Input, Int, NodeDef, NodeEnv, NodeRegistry, Output, Socket
from nodes.comfy.samplers import COMFY_SAMPLER_NAMES
from server.subgraphs import subgraph_definitions
from server.validation import validate_prompt
from server.workflow_io import ui_to_api
from tests.comfy_workflows.conftest import (
    FLUX1_TEMPLATES,
    SCHEDULERS,
    UPSCALE_METHODS,
    comfy_core_registry,
    install_named_files,
    load_template,
)

# class_type → ComfyUI's category (nodes.py, comfy_extras/nodes_flux.py, nodes_custom_sampler.py,
# nodes_model_advanced.py, nodes_sd3.py at a125cd8).
CATEGORIES = {
    "CLIPTextEncode": "conditioning",
    "CLIPTextEncodeFlux": "advanced/conditioning/flux",
    "FluxGuidance": "advanced/conditioning/flux",
    "ConditioningZeroOut": "advanced/conditioning",
    "EmptySD3LatentImage": "latent/sd3",
    "EmptyLatentImage": "latent",
    "LatentUpscale": "latent",
    "ImageScale": "image/upscaling",
    "KSampler": "sampling",
    "KSamplerAdvanced": "sampling",
    "SamplerCustomAdvanced": "sampling/custom_sampling",
    "RandomNoise": "sampling/custom_sampling/noise",
    "DisableNoise": "sampling/custom_sampling/noise",
    "BasicGuider": "sampling/custom_sampling/guiders",
    "CFGGuider": "sampling/custom_sampling/guiders",
    "KSamplerSelect": "sampling/custom_sampling/samplers",
    "BasicScheduler": "sampling/custom_sampling/schedulers",
    "ModelSamplingFlux": "advanced/model",
    "SetFirstSigma": "sampling/custom_sampling/sigmas",
    "ImageInvert": "image",
    "ImageScaleToTotalPixels": "image/upscaling",
}
OURS = tuple(CATEGORIES)
MAX_RESOLUTION = 16384
# Where tests/comfy_workflows/conftest.py differs from ComfyUI a125cd8: EmptyLatentImage's size
# defaults are 512 in nodes.py (1024 is EmptySD3LatentImage's).
CORRECTIONS = {
    ("EmptyLatentImage", "width"): {"default": 512},
    ("EmptyLatentImage", "height"): {"default": 512},
}


def _extra_reference() -> list[NodeDef]:
    """ComfyUI's declarations of the nodes the workflow conftest does not declare."""
    cond, latent = Socket("CONDITIONING"), Socket("LATENT")
    cfg = Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    samplers, schedulers = Combo(COMFY_SAMPLER_NAMES), Combo(SCHEDULERS)
    size = {"default": 512, "min": 0, "max": MAX_RESOLUTION}
    declarations = {
        "KSamplerAdvanced": [
            Input("model", Socket("MODEL")),
            Input("add_noise", Combo(("enable", "disable"))),
            Input("noise_seed", Int(default=0, min=0, max=2**64 - 1, control_after_generate=True)),
            Input("steps", Int(default=20, min=1, max=10000)),
            Input("cfg", cfg),
            Input("sampler_name", samplers),
            Input("scheduler", schedulers),
            Input("positive", cond),
            Input("negative", cond),
            Input("latent_image", latent),
            Input("start_at_step", Int(default=0, min=0, max=10000)),
            Input("end_at_step", Int(default=10000, min=0, max=10000)),
            Input("return_with_leftover_noise", Combo(("disable", "enable"))),
        ],
        "CFGGuider": [
            Input("model", Socket("MODEL")),
            Input("positive", cond),
            Input("negative", cond),
            Input("cfg", cfg),
        ],
        "LatentUpscale": [
            Input("samples", latent),
            Input("upscale_method", Combo(("nearest-exact", "bilinear", "area", "bicubic", "bislerp"))),
            Input("width", Int(**size, step=8)),
            Input("height", Int(**size, step=8)),
            Input("crop", Combo(("disabled", "center"))),
        ],
        "ImageScale": [
            Input("image", Socket("IMAGE")),
            Input("upscale_method", Combo(UPSCALE_METHODS)),
            Input("width", Int(**size, step=1)),
            Input("height", Int(**size, step=1)),
            Input("crop", Combo(("disabled", "center"))),
        ],
    }
    outputs = {"KSamplerAdvanced": "LATENT", "CFGGuider": "GUIDER", "LatentUpscale": "LATENT"}
    outputs["ImageScale"] = "IMAGE"
    names = {"KSamplerAdvanced": "KSampler (Advanced)", "LatentUpscale": "Upscale Latent"}
    names["ImageScale"] = "Upscale Image"
    return [
        NodeDef(
            class_type=name,
            run=lambda ctx, **values: (),
            category="comfyui",
            display_name=names.get(name, name),
            description="",
            inputs=tuple(inputs),
            outputs=(Output(outputs[name], outputs[name]),),
        )
        for name, inputs in declarations.items()
    ]


@pytest.fixture(scope="module")
def reference() -> NodeRegistry:
    registry = comfy_core_registry()
    for d in _extra_reference():
        registry.register(d)
    return registry


@pytest.fixture(scope="module")
def with_ours(reference) -> NodeRegistry:
    """ComfyUI's declarations with fluxloom's real nodes in place of the ones built here."""
    real = nodes.load_all()
    registry = NodeRegistry()
    for d in reference:
        registry.register(real.get(d.class_type) if d.class_type in OURS else d)
    return registry


def _widget_options(entry: list) -> dict:
    return {k: v for k, v in (entry[1] if len(entry) > 1 else {}).items() if k != "tooltip"}


@pytest.mark.parametrize("class_type", OURS)
def test_object_info_matches_comfyui(class_type, reference):
    ours = nodes.load_all().get(class_type).object_info()
    theirs = reference.get(class_type).object_info()
    assert ours["input_order"] == theirs["input_order"]
    for section in ("required", "optional"):
        for name, expected in theirs["input"][section].items():
            got = ours["input"][section][name]
            if isinstance(expected[0], list):  # a combo: its choices
                if name == "sampler_name":  # the samplers fluxloom has, in ComfyUI's order
                    assert got[0] == [s for s in COMFY_SAMPLER_NAMES if s in got[0]] and "euler" in got[0]
                else:
                    assert got[0] == expected[0], name
            else:
                assert got[0] == expected[0], name
            corrected = {**_widget_options(expected), **CORRECTIONS.get((class_type, name), {})}
            assert _widget_options(got) == corrected, name
    assert ours["output"] == theirs["output"]
    assert ours["output_name"] == theirs["output_name"]
    assert ours["display_name"] == theirs["display_name"]
    assert ours["category"] == CATEGORIES[class_type]
    assert ours["output_node"] is False


@pytest.mark.parametrize("name", FLUX1_TEMPLATES)
def test_templates_convert_and_validate_with_our_nodes(name, reference, with_ours, tmp_path):
    """Every FLUX.1 template converts to the same API prompt with our nodes as with ComfyUI's
    declarations (the inputs ComfyUI's own frontend sends), and its values validate against ours."""
    workflow = load_template(name)
    prompt = ui_to_api(workflow, with_ours)
    assert prompt == ui_to_api(workflow, reference)
    env = NodeEnv(models_dir=tmp_path / "models", input_dir=tmp_path / "input", output_dir=tmp_path / "out")
    install_named_files(prompt, env)
    validated = validate_prompt(prompt, with_ours, env)
    assert validated.outputs


def test_the_templates_use_these_nodes():
    """The corpus exercises the nodes above (so the template test checks what it claims)."""
    used = set()
    for name in FLUX1_TEMPLATES:
        workflow = load_template(name)
        for graph in (workflow, *subgraph_definitions(workflow).values()):
            used |= {node["type"] for node in graph["nodes"]}
    assert set(OURS) - used == {"KSamplerAdvanced", "CFGGuider", "LatentUpscale", "ImageScale"}
