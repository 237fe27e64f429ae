"""fluxloom's graph through the real executor equals diffusers' FLUX pipelines bit for bit."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import FluxImg2ImgPipeline, FluxPipeline
from PIL import Image

from tests.flux.builders import Settings, as_image, img2img, output_of, pipeline_kwargs, run, txt2img

CASES = [
    pytest.param(
        model, dtype, cfg, size, id=f"{model}-{dtype}-{'cfg' if cfg else 'nocfg'}-{size[0]}x{size[1]}"
    )
    for model in ("tiny-dev", "tiny-schnell")
    for dtype in ("fp32", "bf16")
    for cfg in (False, True)
    for size in ((64, 64), (80, 48))
]


@pytest.mark.parametrize("model,dtype,cfg,size", CASES)
def test_txt2img_equals_flux_pipeline(flux_runtime, pipelines, model, dtype, cfg, size) -> None:
    s = Settings(source=model, dtype=dtype, width=size[0], height=size[1], seed=7 + size[0])
    if cfg:
        s = replace(s, negative="blurry, low quality", true_cfg_scale=4.0)
    prompt = txt2img(s)
    run(flux_runtime, prompt)
    ours = output_of(flux_runtime, prompt, "decode")
    ref = pipelines(FluxPipeline, model, dtype)(**pipeline_kwargs(s), output_type="pt").images
    assert ours.shape == (1, size[1], size[0], 3) and ours.dtype == torch.float32
    assert torch.equal(ours, as_image(ref))
    latents = output_of(flux_runtime, prompt, "sample")["samples"]
    assert latents.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]


def test_batch_and_prompt_2_equal_pipeline(flux_runtime, pipelines) -> None:
    s = Settings(batch=2, prompt_2="hello world sign", width=48, height=32, guidance=5.0, seed=3)
    prompt = txt2img(s)
    run(flux_runtime, prompt)
    ref = pipelines(FluxPipeline, s.source, s.dtype)(**pipeline_kwargs(s), output_type="pt").images
    ours = output_of(flux_runtime, prompt, "decode")
    assert ours.shape[0] == 2 and torch.equal(ours, as_image(ref))


def test_settings_change_the_image(flux_runtime) -> None:
    """Guard against a parity test that passes because nothing matters: seed, guidance and the
    negative each change the output."""
    base = Settings(seed=11)
    images = []
    for s in (
        base,
        replace(base, seed=12),
        replace(base, guidance=7.0),
        replace(base, negative="dog", true_cfg_scale=3.0),
    ):
        prompt = txt2img(s)
        run(flux_runtime, prompt)
        images.append(output_of(flux_runtime, prompt, "decode"))
    for other in images[1:]:
        assert not torch.equal(images[0], other)


def _input_image(rt, name: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    img.save(rt.env.input_dir / name)
    return img


@pytest.mark.parametrize(
    "dtype,denoise,size,cfg",
    [
        ("fp32", 0.6, (64, 48), False),
        ("bf16", 0.6, (64, 48), False),
        ("fp32", 0.75, (48, 80), True),
        ("bf16", 0.3, (64, 64), True),
        ("fp32", 1.0, (64, 64), False),
    ],
)
def test_img2img_equals_flux_img2img_pipeline(flux_runtime, pipelines, dtype, denoise, size, cfg) -> None:
    width, height = size
    name = f"i2i-{width}x{height}.png"
    image = _input_image(flux_runtime, name, width, height, seed=width + height)
    s = Settings(dtype=dtype, width=width, height=height, steps=5, denoise=denoise, seed=99)
    if cfg:
        s = replace(s, negative="noise", true_cfg_scale=2.5)
    prompt = img2img(s, name)
    run(flux_runtime, prompt)
    ours = output_of(flux_runtime, prompt, "decode")
    kwargs = pipeline_kwargs(s)
    kwargs.pop("num_images_per_prompt")
    pipe = pipelines(FluxImg2ImgPipeline if denoise < 1 else FluxPipeline, s.source, dtype)
    if denoise < 1:
        kwargs.update(image=image, strength=denoise)
    ref = pipe(**kwargs, output_type="pt").images
    assert torch.equal(ours, as_image(ref))


def test_saved_png_equals_pipeline_pil_image(flux_runtime, pipelines) -> None:
    s = Settings(width=80, height=48, seed=5, dtype="bf16")
    prompt = txt2img(s, output="SaveImage", prefix="parity/png")
    workflow = {"last_node_id": 1, "nodes": [], "links": [], "version": 0.4}
    result = run(flux_runtime, prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    (saved,) = result.outputs["out"]["images"]
    assert saved["subfolder"] == "parity" and saved["type"] == "output"
    path = flux_runtime.env.output_dir / saved["subfolder"] / saved["filename"]
    ref = pipelines(FluxPipeline, s.source, s.dtype)(**pipeline_kwargs(s), output_type="pil").images[0]
    with Image.open(path) as png:
        assert png.mode == "RGB" and png.size == (80, 48)
        assert np.array_equal(np.asarray(png), np.asarray(ref))
        stored = json.loads(png.text["prompt"])
        assert json.loads(png.text["workflow"]) == workflow
    assert {k: (v["class_type"], v["inputs"]) for k, v in stored.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in prompt.items()
    }


def test_shipped_low_vram_workflow_equals_flux_pipeline(flux_runtime, pipelines) -> None:
    """The default two-phase workflow from the canvas (UI format, ModelOffload releasing T5 and
    CLIP before the transformer arrives), with quantization 'none', equals FluxPipeline."""
    from server.workflow_io import load_workflow, to_api

    prompt = to_api(load_workflow("flux-dev-lowvram-8bit"), flux_runtime.registry)
    s = Settings(prompt="A cat holding a sign that says hello world", width=48, height=64, steps=4, seed=21)
    for node in prompt.values():
        inputs = node["inputs"]
        if "source" in inputs:
            inputs["source"] = s.source
        if "quantization" in inputs:
            inputs["quantization"] = "none"
        if node["class_type"] == "EncodePrompt":
            inputs.update(prompt=s.prompt, max_sequence_length=s.max_sequence_length)
        if node["class_type"] == "EmptyLatent16ch":
            inputs.update(width=s.width, height=s.height)
        if node["class_type"] == "FluxSampler":
            inputs.update(seed=s.seed, steps=s.steps, guidance=s.guidance)
    assert {n["class_type"] for n in prompt.values()} >= {"ModelOffload", "FluxSampler", "SaveImage"}
    result = run(flux_runtime, prompt)
    ((saver, ui),) = result.outputs.items()
    (saved,) = ui["images"]
    path = flux_runtime.env.output_dir / saved["subfolder"] / saved["filename"]
    ref = pipelines(FluxPipeline, s.source, "fp32")(**pipeline_kwargs(s), output_type="pil").images[0]
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), np.asarray(ref))
