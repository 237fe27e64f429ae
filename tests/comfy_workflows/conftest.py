"""ComfyUI's core node types that the FLUX.1 workflow templates use, declared with `nodes.base` for
conversion and validation tests: ComfyUI's input names, socket types, widget order, defaults and
ranges (read from ComfyUI's nodes.py and comfy_extras/*.py), no run functions. fluxloom's own
implementations of these nodes are separate work; this registry only pins down what a ComfyUI
workflow says, so that UI→API conversion can be checked against it.

Model-file and image combos list real files under the test's `NodeEnv` folders, in ComfyUI's
folder names, as ComfyUI does."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import nodes.comfy.types  # noqa: E402,F401  (declares ComfyUI's socket types: MODEL, SIGMAS, ...)
import nodes.flux.types  # noqa: E402,F401
import nodes.image  # noqa: E402,F401  (IMAGE)
from nodes.base import (
    MAX_SEED,
    Boolean,
    Combo,
    Float,
    Input,
    Int,
    NodeDef,
    NodeEnv,
    NodeRegistry,
    Output,
    Socket,
)
from nodes.base import String as Text

MAX_RESOLUTION = 16384
SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "ddim", "uni_pc",
    "uni_pc_bh2",
)  # fmt: skip
SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
)  # fmt: skip
DUAL_CLIP_TYPES = (
    "sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15", "kandinsky5",
    "kandinsky5_image", "ltxv", "newbie", "ace",
)  # fmt: skip
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")

# (class_type, input) → the ComfyUI models folder its combo lists ("input" = the input folder).
FILE_INPUTS: dict[tuple[str, str], str] = {}

# The FLUX.1 templates of comfyui-workflow-templates: the five text-to-image ones first.
TEXT_TO_IMAGE_TEMPLATES = (
    "flux_schnell",
    "flux_dev_checkpoint_example",
    "flux_dev_full_text_to_image",
    "flux_schnell_full_text_to_image",
    "flux1_krea_dev",
)
OTHER_FLUX1_TEMPLATES = (
    "flux_canny_model_example",
    "flux_depth_lora_example",
    "flux_fill_inpaint_example",
    "flux_fill_outpaint_example",
    "flux_kontext_dev_basic",
    "flux_redux_model_example",
    "flux1_dev_uso_reference_image_gen",
    "image_flux.1_fill_dev_OneReward",
)
FLUX1_TEMPLATES = TEXT_TO_IMAGE_TEMPLATES + OTHER_FLUX1_TEMPLATES


def load_template(name: str) -> dict[str, Any]:
    """A template's UI workflow, from the comfyui-workflow-templates-json package (a test dependency)."""
    files = resources.files("comfyui_workflow_templates_json") / "templates"
    return json.loads((files / f"{name}.json").read_text(encoding="utf-8"))


def template_names() -> list[str]:
    files = resources.files("comfyui_workflow_templates_json") / "templates"
    return sorted(p.name[: -len(".json")] for p in files.iterdir() if p.name.endswith(".json"))


# --- declarations ------------------------------------------------------------------------------


def S(name: str, type_: str, optional: bool = False) -> Input:
    return Input(name, Socket(type_), optional=optional)


def files(class_type: str, name: str, folder: str, **options: Any) -> Input:
    """A combo of the files in a ComfyUI models folder (or the input folder), as ComfyUI lists them."""
    FILE_INPUTS[(class_type, name)] = folder

    def listing(env: NodeEnv) -> list[str]:
        root = env.input_dir if folder == "input" else env.models_dir / folder
        return sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []

    return Input(name, Combo(choices=listing, **options))


def out(*types: str, names: tuple[str, ...] = ()) -> list[Output]:
    return [Output(t, names[i] if i < len(names) else t) for i, t in enumerate(types)]


def _declarations() -> list[tuple[str, list[Input], list[Output], dict[str, Any]]]:
    cond, latent, image = "CONDITIONING", "LATENT", "IMAGE"
    seed = Int(default=0, min=0, max=MAX_SEED, control_after_generate=True)
    pad = Int(default=0, min=0, max=MAX_RESOLUTION, step=8)
    flux_guidance = Float(default=3.5, min=0.0, max=100.0, step=0.1)
    return [
        # loaders (nodes.py; ModelPatchLoader in comfy_extras/nodes_model_patch.py)
        (
            "CheckpointLoaderSimple",
            [files("CheckpointLoaderSimple", "ckpt_name", "checkpoints")],
            out("MODEL", "CLIP", "VAE"),
            {"display_name": "Load Checkpoint"},
        ),
        (
            "UNETLoader",
            [
                files("UNETLoader", "unet_name", "diffusion_models"),
                Input("weight_dtype", Combo(("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"))),
            ],
            out("MODEL"),
            {"display_name": "Load Diffusion Model"},
        ),
        (
            "DualCLIPLoader",
            [
                files("DualCLIPLoader", "clip_name1", "text_encoders"),
                files("DualCLIPLoader", "clip_name2", "text_encoders"),
                Input("type", Combo(DUAL_CLIP_TYPES)),
                Input("device", Combo(("default", "cpu")), optional=True),
            ],
            out("CLIP"),
            {"display_name": "Load CLIP (Dual)"},
        ),
        ("VAELoader", [files("VAELoader", "vae_name", "vae")], out("VAE"), {"display_name": "Load VAE"}),
        (
            "LoraLoaderModelOnly",
            [
                S("model", "MODEL"),
                files("LoraLoaderModelOnly", "lora_name", "loras"),
                Input("strength_model", Float(default=1.0, min=-100.0, max=100.0, step=0.01)),
            ],
            out("MODEL"),
            {"display_name": "Load LoRA"},
        ),
        ("CLIPVisionLoader", [files("CLIPVisionLoader", "clip_name", "clip_vision")], out("CLIP_VISION"), {}),
        (
            "StyleModelLoader",
            [files("StyleModelLoader", "style_model_name", "style_models")],
            out("STYLE_MODEL"),
            {},
        ),
        ("ModelPatchLoader", [files("ModelPatchLoader", "name", "model_patches")], out("MODEL_PATCH"), {}),
        # conditioning (nodes.py, comfy_extras/nodes_flux.py, nodes_ip2p.py, nodes_edit_model.py)
        (
            "CLIPTextEncode",
            [Input("text", Text(multiline=True)), S("clip", "CLIP")],
            out(cond),
            {"display_name": "CLIP Text Encode (Prompt)"},
        ),
        (
            "CLIPTextEncodeFlux",
            [
                S("clip", "CLIP"),
                Input("clip_l", Text(multiline=True)),
                Input("t5xxl", Text(multiline=True)),
                Input("guidance", flux_guidance),
            ],
            out(cond),
            {},
        ),
        ("FluxGuidance", [S("conditioning", cond), Input("guidance", flux_guidance)], out(cond), {}),
        ("ConditioningZeroOut", [S("conditioning", cond)], out(cond), {}),
        (
            "CLIPVisionEncode",
            [S("clip_vision", "CLIP_VISION"), S("image", image), Input("crop", Combo(("center", "none")))],
            out("CLIP_VISION_OUTPUT"),
            {},
        ),
        (
            "StyleModelApply",
            [
                S("conditioning", cond),
                S("style_model", "STYLE_MODEL"),
                S("clip_vision_output", "CLIP_VISION_OUTPUT"),
                Input("strength", Float(default=1.0, min=0.0, max=10.0, step=0.001)),
                Input("strength_type", Combo(("multiply", "attn_bias"))),
            ],
            out(cond),
            {},
        ),
        (
            "InstructPixToPixConditioning",
            [S("positive", cond), S("negative", cond), S("vae", "VAE"), S("pixels", image)],
            out(cond, cond, latent, names=("positive", "negative", "latent")),
            {},
        ),
        (
            "InpaintModelConditioning",
            [
                S("positive", cond),
                S("negative", cond),
                S("vae", "VAE"),
                S("pixels", image),
                S("mask", "MASK"),
                Input("noise_mask", Boolean(default=True)),
            ],
            out(cond, cond, latent, names=("positive", "negative", "latent")),
            {},
        ),
        ("ReferenceLatent", [S("conditioning", cond), S("latent", latent, optional=True)], out(cond), {}),
        (
            "FluxKontextMultiReferenceLatentMethod",
            [
                S("conditioning", cond),
                Input(
                    "reference_latents_method", Combo(("offset", "index", "uxo/uno", "index_timestep_zero"))
                ),
            ],
            out(cond),
            {},
        ),
        ("LotusConditioning", [], out(cond, names=("conditioning",)), {}),
        # model patches (comfy_extras/nodes_model_advanced.py, nodes_differential_diffusion.py, ...)
        (
            "ModelSamplingFlux",
            [
                S("model", "MODEL"),
                Input("max_shift", Float(default=1.15, min=0.0, max=100.0, step=0.01)),
                Input("base_shift", Float(default=0.5, min=0.0, max=100.0, step=0.01)),
                Input("width", Int(default=1024, min=16, max=MAX_RESOLUTION, step=8)),
                Input("height", Int(default=1024, min=16, max=MAX_RESOLUTION, step=8)),
            ],
            out("MODEL"),
            {},
        ),
        (
            "DifferentialDiffusion",
            [
                S("model", "MODEL"),
                Input("strength", Float(default=1.0, min=0.0, max=1.0, step=0.01), optional=True),
            ],
            out("MODEL"),
            {},
        ),
        (
            "USOStyleReference",
            [
                S("model", "MODEL"),
                S("model_patch", "MODEL_PATCH"),
                S("clip_vision_output", "CLIP_VISION_OUTPUT"),
            ],
            out("MODEL"),
            {},
        ),
        # latents (nodes.py, comfy_extras/nodes_sd3.py)
        (
            "EmptySD3LatentImage",
            [
                Input("width", Int(default=1024, min=16, max=MAX_RESOLUTION, step=16)),
                Input("height", Int(default=1024, min=16, max=MAX_RESOLUTION, step=16)),
                Input("batch_size", Int(default=1, min=1, max=4096)),
            ],
            out(latent),
            {},
        ),
        (
            "EmptyLatentImage",
            [
                Input("width", Int(default=1024, min=16, max=MAX_RESOLUTION, step=8)),
                Input("height", Int(default=1024, min=16, max=MAX_RESOLUTION, step=8)),
                Input("batch_size", Int(default=1, min=1, max=4096)),
            ],
            out(latent),
            {"display_name": "Empty Latent Image"},
        ),
        ("SetLatentNoiseMask", [S("samples", latent), S("mask", "MASK")], out(latent), {}),
        ("VAEDecode", [S("samples", latent), S("vae", "VAE")], out(image), {"display_name": "VAE Decode"}),
        ("VAEEncode", [S("pixels", image), S("vae", "VAE")], out(latent), {"display_name": "VAE Encode"}),
        # sampling (nodes.py, comfy_extras/nodes_custom_sampler.py)
        (
            "KSampler",
            [
                S("model", "MODEL"),
                Input("seed", seed),
                Input("steps", Int(default=20, min=1, max=10000)),
                Input("cfg", Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)),
                Input("sampler_name", Combo(SAMPLERS)),
                Input("scheduler", Combo(SCHEDULERS)),
                S("positive", cond),
                S("negative", cond),
                S("latent_image", latent),
                Input("denoise", Float(default=1.0, min=0.0, max=1.0, step=0.01)),
            ],
            out(latent),
            {},
        ),
        ("KSamplerSelect", [Input("sampler_name", Combo(SAMPLERS))], out("SAMPLER"), {}),
        (
            "BasicScheduler",
            [
                S("model", "MODEL"),
                Input("scheduler", Combo(SCHEDULERS)),
                Input("steps", Int(default=20, min=1, max=10000)),
                Input("denoise", Float(default=1.0, min=0.0, max=1.0, step=0.01)),
            ],
            out("SIGMAS"),
            {},
        ),
        ("BasicGuider", [S("model", "MODEL"), S("conditioning", cond)], out("GUIDER"), {}),
        ("RandomNoise", [Input("noise_seed", seed)], out("NOISE"), {}),
        ("DisableNoise", [], out("NOISE"), {}),
        (
            "SamplerCustomAdvanced",
            [
                S("noise", "NOISE"),
                S("guider", "GUIDER"),
                S("sampler", "SAMPLER"),
                S("sigmas", "SIGMAS"),
                S("latent_image", latent),
            ],
            out(latent, latent, names=("output", "denoised_output")),
            {},
        ),
        (
            "SetFirstSigma",
            [S("sigmas", "SIGMAS"), Input("sigma", Float(default=136.0, min=0.0, max=20000.0, step=0.001))],
            out("SIGMAS"),
            {},
        ),
        # images (nodes.py, comfy_extras/nodes_images.py, nodes_post_processing.py, nodes_flux.py, ...)
        (
            "LoadImage",
            [files("LoadImage", "image", "input", image_upload=True)],
            out(image, "MASK"),
            {"display_name": "Load Image"},
        ),
        (
            "SaveImage",
            [S("images", image), Input("filename_prefix", Text(default="ComfyUI"))],
            [],
            {"output_node": True, "display_name": "Save Image"},
        ),
        ("PreviewImage", [S("images", image)], [], {"output_node": True, "display_name": "Preview Image"}),
        ("ImageInvert", [S("image", image)], out(image), {"display_name": "Invert Image"}),
        (
            "ImagePadForOutpaint",
            [
                S("image", image),
                Input("left", pad),
                Input("top", pad),
                Input("right", pad),
                Input("bottom", pad),
                Input("feathering", Int(default=40, min=0, max=MAX_RESOLUTION)),
            ],
            out(image, "MASK"),
            {},
        ),
        (
            "ImageScaleToTotalPixels",
            [
                S("image", image),
                Input("upscale_method", Combo(UPSCALE_METHODS)),
                Input("megapixels", Float(default=1.0, min=0.01, max=16.0, step=0.01)),
                Input("resolution_steps", Int(default=1, min=1, max=256)),
            ],
            out(image),
            {"display_name": "Scale Image to Total Pixels"},
        ),
        (
            "ImageScaleToMaxDimension",
            [
                S("image", image),
                Input("upscale_method", Combo(("area", "lanczos", "bilinear", "nearest-exact", "bicubic"))),
                Input("largest_size", Int(default=512, min=0, max=MAX_RESOLUTION)),
            ],
            out(image),
            {},
        ),
        (
            "ImageStitch",
            [
                S("image1", image),
                Input("direction", Combo(("right", "down", "left", "up"), default="right")),
                Input("match_image_size", Boolean(default=True)),
                Input("spacing_width", Int(default=0, min=0, max=1024, step=2)),
                Input("spacing_color", Combo(("white", "black", "red", "green", "blue"), default="white")),
                S("image2", image, optional=True),
            ],
            out(image),
            {},
        ),
        ("FluxKontextImageScale", [S("image", image)], out(image), {}),
        (
            "Canny",
            [
                S("image", image),
                Input("low_threshold", Float(default=0.4, min=0.01, max=0.99, step=0.01)),
                Input("high_threshold", Float(default=0.8, min=0.01, max=0.99, step=0.01)),
            ],
            out(image),
            {},
        ),
    ]


def comfy_core_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for class_type, inputs, outputs, extra in _declarations():

        def run(ctx, _name=class_type, **values):
            raise NotImplementedError(f"{_name} is declared for conversion tests only")

        registry.register(
            NodeDef(
                class_type=class_type,
                run=run,
                category="comfyui",
                display_name=extra.get("display_name", class_type),
                description="",
                inputs=tuple(inputs),
                outputs=tuple(outputs),
                output_node=extra.get("output_node", False),
                python_module="tests.comfy_workflows",
            )
        )
    return registry


@pytest.fixture(scope="session")
def comfy_registry() -> NodeRegistry:
    return comfy_core_registry()


def install_named_files(prompt: dict[str, Any], env: NodeEnv) -> list[Path]:
    """Create (empty) every model and input file an API prompt names, where ComfyUI would look for it."""
    made = []
    for node in prompt.values():
        for name, value in node.get("inputs", {}).items():
            folder = FILE_INPUTS.get((node.get("class_type"), name))
            if folder and isinstance(value, str):
                root = env.input_dir if folder == "input" else env.models_dir / folder
                root.mkdir(parents=True, exist_ok=True)
                (root / value).touch()
                made.append(root / value)
    return made


@pytest.fixture
def comfy_env(tmp_path) -> NodeEnv:
    return NodeEnv(models_dir=tmp_path / "models", input_dir=tmp_path / "input", output_dir=tmp_path / "out")


# --- fluxloom's own nodes on the demo model -------------------------------------------------------


@pytest.fixture(scope="session")
def app_runtime(demo_models, tmp_path_factory):
    """fluxloom's node library (ComfyUI's nodes included) on a machine with only the demo model."""
    from server.runtime import RuntimeConfig, create_runtime

    data = tmp_path_factory.mktemp("comfy-workflows-run")
    return create_runtime(
        RuntimeConfig(
            models_dir=demo_models,
            output_dir=data / "output",
            input_dir=data / "input",
            temp_dir=data / "temp",
            cache_budget_bytes=256 * 2**20,
            ensure_demo_model=False,
        )
    )


@pytest.fixture(scope="session")
def app_server(app_runtime, tmp_path_factory):
    """A real server (127.0.0.1, real sockets) on that runtime."""
    from tests.server.conftest import ServerThread

    server = ServerThread(tmp_path_factory.mktemp("comfy-workflows-server"), runtime=app_runtime).start()
    yield server
    server.stop()
