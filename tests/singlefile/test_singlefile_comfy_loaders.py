"""ComfyUI's loaders on fluxloom's model files: the same names, inputs and outputs as ComfyUI's,
handle bundles out, CLIP-L and T5 told apart by content, fp8 weight_dtype kept 8-bit, and on a
machine with only the demo model, a template's file names run with the demo's files."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel

from nodes.base import NodeContext
from nodes.comfy.values import DiffusionModel, TextEncoders
from nodes.flux.demo import DEMO_NAME
from nodes.flux.demo_files import DEMO_FILES
from nodes.flux.formats.fp8 import Fp8Linear
from nodes.flux.handles import ModelHandle
from server.prepare import prepare_prompt

FILES = {kind: rel.split("/", 1)[1] for kind, rel in DEMO_FILES.items()}


def run_node(runtime, class_type: str, **inputs):
    return runtime.registry.get(class_type).run(NodeContext(env=runtime.env, class_type=class_type), **inputs)


def test_unet_loader_gives_a_model_and_fp8_stays_8bit(runtime):
    (model,) = run_node(runtime, "UNETLoader", unet_name=FILES["transformer"], weight_dtype="default")
    assert isinstance(model, DiffusionModel) and model.transformer.path.endswith(FILES["transformer"])
    (fp8,) = run_node(runtime, "UNETLoader", unet_name=FILES["transformer"], weight_dtype="fp8_e4m3fn")
    assert fp8.transformer != model.transformer  # another model for the manager and the cache
    with runtime.env.models.use(fp8.transformer) as loaded:
        layers = [m for m in loaded.module.modules() if isinstance(m, Fp8Linear)]
        assert layers and all(m.weight.dtype == torch.float8_e4m3fn for m in layers)


@pytest.mark.parametrize("first,second", [("t5xxl", "clip_l"), ("clip_l", "t5xxl")])
def test_dual_clip_loader_tells_the_encoders_apart_in_either_order(runtime, first, second):
    (clip,) = run_node(
        runtime, "DualCLIPLoader", clip_name1=FILES[first], clip_name2=FILES[second], type="flux"
    )
    assert isinstance(clip, TextEncoders)
    assert clip.clip_l.kind == "CLIP" and clip.clip_l.path.endswith(FILES["clip_l"])
    assert clip.t5.kind == "T5" and clip.t5.path.endswith(FILES["t5xxl"])


def test_two_clip_l_files_are_refused_by_name(runtime):
    with pytest.raises(ValueError, match="both text encoders are CLIP-L"):
        run_node(
            runtime, "DualCLIPLoader", clip_name1=FILES["clip_l"], clip_name2=FILES["clip_l"], type="flux"
        )


def test_a_pipeline_or_checkpoint_gives_every_part(runtime):
    (clip,) = run_node(runtime, "CLIPLoader", clip_name=DEMO_NAME, type="stable_diffusion")
    assert clip.clip_l.kind == "CLIP" and clip.t5.kind == "T5"
    model, encoders, vae = run_node(runtime, "CheckpointLoaderSimple", ckpt_name=FILES["checkpoint"])
    handles = [model.transformer, encoders.clip_l, encoders.t5, vae]
    assert [h.kind for h in handles] == ["FLUX_MODEL", "CLIP", "T5", "VAE"]
    assert all(isinstance(h, ModelHandle) and h.path.endswith(FILES["checkpoint"]) for h in handles)


def test_a_template_s_file_names_run_with_the_demo_files(runtime):
    """ComfyUI's FLUX templates name flux1-dev.safetensors, t5xxl_fp16.safetensors,
    clip_l.safetensors and ae.safetensors; with only the demo installed they are pointed at it."""
    prompt = {
        "unet": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"},
        },
        "clip": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "t5xxl_fp16.safetensors",
                "clip_name2": "clip_l.safetensors",
                "type": "flux",
            },
        },
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "empty": {"class_type": "EmptyLatent16ch", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["empty", 0], "vae": ["vae", 0]}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
        "m": {"class_type": "ShowValue", "inputs": {"value": ["unet", 0]}},
        "c": {"class_type": "ShowValue", "inputs": {"value": ["clip", 0]}},
    }
    prepared = prepare_prompt(prompt, runtime.registry, runtime.env)
    inputs = {nid: node["inputs"] for nid, node in prepared.prompt.items()}
    assert inputs["unet"]["unet_name"] == DEMO_NAME
    assert inputs["clip"]["clip_name1"] == DEMO_NAME and inputs["clip"]["clip_name2"] == DEMO_NAME
    assert inputs["vae"]["vae_name"] == DEMO_NAME
    assert any("'flux1-dev.safetensors' is not installed" in w for w in prepared.warnings)
    result = runtime.executor.execute(prepared.validated, "template-names")
    assert result.ok, result.error


def test_loaders_tell_dev_from_schnell_so_basic_scheduler_loads_nothing(runtime):
    """The MODEL knows from the file (or the pipeline's config) whether the transformer has
    guidance embeddings, so BasicScheduler picks dev's sigma table without loading it; a MODEL
    that does not know loads it to read its config, and gets the same sigmas."""
    models = runtime.env.models
    (from_file,) = run_node(runtime, "UNETLoader", unet_name=FILES["transformer"], weight_dtype="default")
    (from_pipeline,) = run_node(runtime, "UNETLoader", unet_name=DEMO_NAME, weight_dtype="default")
    (from_checkpoint, _, _) = run_node(runtime, "CheckpointLoaderSimple", ckpt_name=FILES["checkpoint"])
    assert from_file.guidance_embeds is True and from_pipeline.guidance_embeds is True
    assert from_checkpoint.guidance_embeds is True
    models.release(from_file.transformer)
    settings = {"scheduler": "simple", "steps": 4, "denoise": 1.0}
    (sigmas,) = run_node(runtime, "BasicScheduler", model=from_file, **settings)
    assert not models.is_loaded(from_file.transformer)
    unknown = DiffusionModel(from_file.transformer)
    (read_from_config,) = run_node(runtime, "BasicScheduler", model=unknown, **settings)
    assert models.is_loaded(from_file.transformer)
    assert torch.equal(sigmas, read_from_config)


def test_guidance_embeds_of_a_schnell_file_and_folder(tmp_path):
    from nodes.comfy.loaders import guidance_embeds
    from nodes.flux.demo import build_tiny_flux
    from nodes.flux.formats.writers import write_bfl_transformer

    folder = build_tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    write_bfl_transformer(transformer, tmp_path / "schnell.safetensors", dtype=None)
    assert guidance_embeds(folder) is False
    assert guidance_embeds(tmp_path / "schnell.safetensors") is False
    assert guidance_embeds(tmp_path / "missing.safetensors") is None
