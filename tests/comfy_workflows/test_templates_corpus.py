"""The FLUX.1 workflows of ComfyUI's official template package (comfyui-workflow-templates-json),
as a corpus: each converts to the API prompt ComfyUI's own frontend would send (subgraphs inlined)
and validates against ComfyUI's declarations of the node types it uses (conftest.py)."""

from __future__ import annotations

import re

import pytest

from server.subgraphs import SUBGRAPH_KEY, promoted_widget_values, subgraph_definitions
from server.validation import validate_prompt
from server.workflow_io import ui_to_api
from tests.comfy_workflows.conftest import (
    FLUX1_TEMPLATES,
    TEXT_TO_IMAGE_TEMPLATES,
    install_named_files,
    load_template,
    template_names,
)

PATH_ID = re.compile(r"^\d+(:\d+)*$")


class Prefix:
    """Equal to any string that starts with `text` (for the templates' long prompts)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(self.text)

    def __repr__(self) -> str:
        return f"Prefix({self.text!r}...)"


def converted(name, registry):
    return ui_to_api(load_template(name), registry)


def inputs_of(prompt):
    return {nid: (n["class_type"], n["inputs"]) for nid, n in prompt.items()}


def test_the_flux1_templates_of_the_package_are_these():
    flux1 = {n for n in template_names() if re.match(r"^(flux_|flux1_|image_flux\.1_)", n)}
    assert flux1 == set(FLUX1_TEMPLATES)


@pytest.mark.parametrize("name", FLUX1_TEMPLATES)
def test_template_converts_and_validates(name, comfy_registry, comfy_env):
    workflow = load_template(name)
    prompt = ui_to_api(workflow, comfy_registry)
    definitions = subgraph_definitions(workflow)
    assert not [n for n in prompt.values() if n["class_type"] in definitions]  # all inlined
    assert all(PATH_ID.match(nid) for nid in prompt)
    assert all(SUBGRAPH_KEY in n["_meta"] for nid, n in prompt.items() if ":" in nid)
    assert bool(definitions) == any(":" in nid for nid in prompt)
    install_named_files(prompt, comfy_env)  # the model and image files the workflow names
    validated = validate_prompt(prompt, comfy_registry, comfy_env)
    assert validated.outputs and set(validated.order) <= set(prompt)


@pytest.mark.parametrize("name", FLUX1_TEMPLATES)
def test_template_widget_values_fit_comfyui_declarations(name, comfy_registry):
    """Every saved node has exactly the widget values its declaration implies: one per widget,
    a control value after each seed, and the upload button's value after an image combo."""
    workflow = load_template(name)
    for graph in (workflow, *subgraph_definitions(workflow).values()):
        for node in graph["nodes"]:
            d = comfy_registry.get(node["type"])
            if d is None:
                continue
            widgets = d.widgets()
            expected = len(widgets)
            expected += sum(getattr(w.spec, "control_after_generate", False) for w in widgets)
            expected += sum(getattr(w.spec, "image_upload", False) for w in widgets)
            assert len(node.get("widgets_values") or []) == expected, (name, node["id"], node["type"])


def test_flux_schnell_converts_as_comfyui_sends_it(comfy_registry):
    prompt = converted("flux_schnell", comfy_registry)
    assert inputs_of(prompt) == {
        "6": (
            "CLIPTextEncode",
            {"text": Prefix("a bottle with a beautiful rainbow galaxy"), "clip": ["30", 1]},
        ),
        "8": ("VAEDecode", {"samples": ["31", 0], "vae": ["30", 2]}),
        "9": ("SaveImage", {"filename_prefix": "ComfyUI", "images": ["8", 0]}),
        "27": ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        "30": ("CheckpointLoaderSimple", {"ckpt_name": "flux1-schnell-fp8.safetensors"}),
        "31": (
            "KSampler",
            {
                "seed": 173805153958730,  # "randomize" (control_after_generate) is not sent
                "steps": 4,
                "cfg": 1,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1,
                "model": ["30", 0],
                "positive": ["6", 0],
                "negative": ["33", 0],
                "latent_image": ["27", 0],
            },
        ),
        "33": ("CLIPTextEncode", {"text": "", "clip": ["30", 1]}),
    }
    assert prompt["33"]["_meta"]["title"] == "CLIP Text Encode (Negative Prompt)"


def test_flux_dev_full_text_to_image_inlines_its_subgraph(comfy_registry):
    prompt = converted("flux_dev_full_text_to_image", comfy_registry)
    assert inputs_of(prompt) == {
        "9": ("SaveImage", {"filename_prefix": "ComfyUI", "images": ["194:51", 0]}),
        "194:45": ("VAELoader", {"vae_name": "ae.safetensors"}),
        "194:46": ("UNETLoader", {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}),
        "194:47": (
            "DualCLIPLoader",
            {
                "clip_name1": "clip_l.safetensors",
                "clip_name2": "t5xxl_fp16.safetensors",
                "type": "flux",
                "device": "default",
            },
        ),
        "194:48": ("EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        "194:49": (
            "CLIPTextEncode",
            {"text": Prefix("A fairy tale scene of a young girl"), "clip": ["194:47", 0]},
        ),
        "194:50": (
            "KSampler",
            {
                "seed": 0,
                "steps": 20,
                "cfg": 1,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1,
                "model": ["194:46", 0],
                "positive": ["194:49", 0],
                "negative": ["194:52", 0],
                "latent_image": ["194:48", 0],
            },
        ),
        "194:51": ("VAEDecode", {"samples": ["194:50", 0], "vae": ["194:45", 0]}),
        "194:52": ("ConditioningZeroOut", {"conditioning": ["194:49", 0]}),
    }
    assert prompt["194:50"]["_meta"] == {"title": "KSampler", "subgraph": "Text to Image (Flux.1 Dev)"}


def test_other_text_to_image_templates_key_nodes(comfy_registry):
    checkpoint = converted("flux_dev_checkpoint_example", comfy_registry)
    assert checkpoint["9"]["inputs"] == {"filename_prefix": "Flux.1_Dev", "images": ["56:53", 0]}
    assert checkpoint["56:52"]["inputs"]["seed"] == 53943644181156
    assert checkpoint["56:52"]["inputs"]["negative"] == ["56:54", 0]

    schnell = converted("flux_schnell_full_text_to_image", comfy_registry)
    assert schnell["41"]["inputs"] == {
        "clip_l": Prefix("Cute retro mini car"),
        "t5xxl": Prefix("Create a 3D - styled image"),
        "guidance": 3.5,
        "clip": ["40", 0],
    }
    assert schnell["38"]["inputs"] == {"unet_name": "flux1-schnell.safetensors", "weight_dtype": "default"}
    assert schnell["31"]["inputs"]["steps"] == 4 and schnell["31"]["inputs"]["negative"] == ["42", 0]

    krea = converted("flux1_krea_dev", comfy_registry)
    assert krea["200:65"]["inputs"] == {
        "unet_name": "flux1-krea-dev_fp8_scaled.safetensors",
        "weight_dtype": "default",
    }
    assert krea["9"]["inputs"] == {"filename_prefix": "flux_krea", "images": ["200:198", 0]}


def test_nested_subgraph_template_resolves_through_both_levels(comfy_registry):
    # Depth to Image (instance 150) holds Lotus Depth (instance 41): the depth image it makes
    # feeds InstructPixToPixConditioning one level up, and its pixels come from outside both.
    prompt = converted("flux_depth_lora_example", comfy_registry)
    assert prompt["150:35"]["inputs"]["pixels"] == ["150:41:99", 0]
    assert prompt["150:41:97"]["inputs"]["pixels"] == ["150:107", 0]
    assert prompt["150:107"]["inputs"]["image"] == ["17", 0]
    assert prompt["150:41:99"]["_meta"]["subgraph"] == "Depth to Image(Flux.1 Dev) › Lotus Depth(Subgraph)"


def test_promoted_widget_values_of_a_template_instance(comfy_registry):
    # The USO instance saves its promoted widgets' values (prompt, size, seed, model files) in
    # the subgraph's input order; they override the inner nodes' own values.
    workflow = load_template("flux1_dev_uso_reference_image_gen")
    instance = next(n for n in workflow["nodes"] if n["id"] == 112)
    assert instance["widgets_values"][1:4] == [1024, 1024, 1058487910949722]
    instance["widgets_values"][:4] = ["a red fox", 512, 768, 42]
    prompt = ui_to_api(workflow, comfy_registry)
    assert prompt["112:6"]["inputs"]["text"] == "a red fox"
    assert prompt["112:110"]["inputs"] == {"width": 512, "height": 768, "batch_size": 1}
    assert prompt["112:31"]["inputs"]["seed"] == 42
    assert not any(nid.startswith("113:") for nid in prompt)  # the bypassed instance runs nothing


# What the five FLUX.1 text-to-image templates need from fluxloom: class_type → inputs sent.
TEXT_TO_IMAGE_NODE_TYPES = {
    "CLIPTextEncode": ["clip", "text"],
    "CLIPTextEncodeFlux": ["clip", "clip_l", "guidance", "t5xxl"],
    "CheckpointLoaderSimple": ["ckpt_name"],
    "ConditioningZeroOut": ["conditioning"],
    "DualCLIPLoader": ["clip_name1", "clip_name2", "device", "type"],
    "EmptySD3LatentImage": ["batch_size", "height", "width"],
    "KSampler": [
        "cfg",
        "denoise",
        "latent_image",
        "model",
        "negative",
        "positive",
        "sampler_name",
        "scheduler",
        "seed",
        "steps",
    ],
    "SaveImage": ["filename_prefix", "images"],
    "UNETLoader": ["unet_name", "weight_dtype"],
    "VAEDecode": ["samples", "vae"],
    "VAELoader": ["vae_name"],
}


def test_node_types_the_text_to_image_templates_use(comfy_registry):
    used: dict[str, set[str]] = {}
    for name in TEXT_TO_IMAGE_TEMPLATES:
        for node in converted(name, comfy_registry).values():
            used.setdefault(node["class_type"], set()).update(node["inputs"])
    assert {k: sorted(v) for k, v in used.items()} == TEXT_TO_IMAGE_NODE_TYPES


def test_promoted_values_by_position_agree_with_the_named_ones_across_the_corpus():
    """Recent frontends save an instance's promoted widget values twice: by position and by input
    name. Wherever the corpus has both, reading the positions alone gives the same values."""
    checked = 0
    for name in template_names():
        workflow = load_template(name)
        if not isinstance(workflow, dict) or "nodes" not in workflow:
            continue
        definitions = subgraph_definitions(workflow)
        for graph in (workflow, *definitions.values()):
            for node in graph["nodes"]:
                if node.get("type") in definitions and isinstance(node.get("widgets_values_named"), dict):
                    positional = {k: v for k, v in node.items() if k != "widgets_values_named"}
                    definition = definitions[node["type"]]
                    named = promoted_widget_values(node, definition)
                    assert promoted_widget_values(positional, definition) == named, (name, node["id"])
                    checked += 1
    assert checked >= 50
