"""FLUX and image nodes through the real executor: progress, interruption, caching, image files,
mixed dtypes and clear errors for bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.flux.latent import check_latent
from tests.flux.builders import Settings, img2img, output_of, run, txt2img


def progress_events(result_messages: list, node: str) -> list[tuple[int, int]]:
    return [(d["value"], d["max"]) for e, d in result_messages if e == "progress" and d["node"] == node]


def test_progress_reported_at_every_step(flux_runtime) -> None:
    events: list = []
    s = Settings(steps=5, seed=1001)
    run(flux_runtime, txt2img(s), listener=lambda e, d: events.append((e, d)))
    assert progress_events(events, "sample") == [(i, 5) for i in range(1, 6)]


def test_img2img_progress_counts_only_the_steps_run(flux_runtime) -> None:
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(flux_runtime.env.input_dir / "grey.png")
    events: list = []
    s = Settings(steps=5, denoise=0.6, width=32, height=32, seed=1002)
    run(flux_runtime, img2img(s, "grey.png"), listener=lambda e, d: events.append((e, d)))
    assert progress_events(events, "sample") == [(1, 3), (2, 3), (3, 3)]


def test_interrupt_mid_sampling_stops_at_that_step(flux_runtime) -> None:
    events: list = []
    executor = flux_runtime.executor

    def listener(event: str, data: dict) -> None:
        events.append((event, data))
        if event == "progress" and data["node"] == "sample" and data["value"] == 2:
            executor.interrupt()

    s = Settings(steps=6, seed=1003)
    result = executor.execute(txt2img(s), "interrupted", listener)
    assert result.status == "interrupted"
    assert progress_events(events, "sample") == [(1, 6), (2, 6)]
    (payload,) = [d for e, d in events if e == "execution_interrupted"]
    assert payload["node_id"] == "sample" and payload["node_type"] == "FluxSampler"
    assert "decode" not in result.executed and "out" not in result.outputs
    # Nothing half-done was cached: the same prompt runs the sampler again, to the end.
    again = run(flux_runtime, txt2img(s))
    assert "sample" in again.executed and "pos" in again.cached


def test_changing_the_seed_reruns_only_the_sampler_and_below(flux_runtime) -> None:
    s = Settings(seed=1004)
    run(flux_runtime, txt2img(s))
    result = run(flux_runtime, txt2img(replace(s, seed=1005)))
    assert set(result.executed) == {"sample", "decode", "out"}
    assert {"pos", "empty", "clip", "t5", "flux", "vae"} <= set(result.cached)


def test_schnell_ignores_guidance_dev_does_not(flux_runtime) -> None:
    images = {}
    for source in ("tiny-schnell", "tiny-dev"):
        for guidance in (1.0, 8.0):
            prompt = txt2img(Settings(source=source, guidance=guidance, seed=1006))
            run(flux_runtime, prompt)
            images[source, guidance] = output_of(flux_runtime, prompt, "decode")
    assert torch.equal(images["tiny-schnell", 1.0], images["tiny-schnell", 8.0])
    assert not torch.equal(images["tiny-dev", 1.0], images["tiny-dev", 8.0])


def test_negative_is_ignored_without_true_cfg(flux_runtime) -> None:
    s = Settings(seed=1007)
    plain = txt2img(s)
    with_neg = txt2img(replace(s, negative="dog", true_cfg_scale=1.0))
    run(flux_runtime, plain)
    run(flux_runtime, with_neg)
    assert torch.equal(output_of(flux_runtime, plain, "decode"), output_of(flux_runtime, with_neg, "decode"))


def test_empty_latent_shape_and_batch(flux_runtime) -> None:
    prompt = txt2img(Settings(width=96, height=32, batch=3, steps=1, seed=1008))
    run(flux_runtime, prompt)
    assert output_of(flux_runtime, prompt, "empty")["samples"].shape == (3, 16, 4, 12)
    image = output_of(flux_runtime, prompt, "decode")
    assert image.shape == (3, 32, 96, 3) and 0.0 <= image.min() and image.max() <= 1.0


def test_mixed_dtypes_run(flux_runtime) -> None:
    """fp32 encoders and VAE with a bf16 transformer: FluxPipeline refuses this mix; fluxloom
    casts where the dtypes meet."""
    s = Settings(dtype="fp32", steps=2, seed=1009)
    prompt = txt2img(s)
    prompt["flux"]["inputs"]["dtype"] = "bf16"
    run(flux_runtime, prompt)
    assert output_of(flux_runtime, prompt, "sample")["samples"].dtype == torch.bfloat16
    image = output_of(flux_runtime, prompt, "decode")
    assert image.dtype == torch.float32 and torch.isfinite(image).all()


def test_denoise_too_low_is_a_clear_error(flux_runtime) -> None:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(flux_runtime.env.input_dir / "black.png")
    s = Settings(steps=4, denoise=0.0, width=32, height=32, seed=1010)
    result = flux_runtime.executor.execute(img2img(s, "black.png"), "bad-denoise")
    assert result.status == "error"
    assert result.error["node_id"] == "sample" and result.error["node_type"] == "FluxSampler"
    assert "denoise 0.0 with 4 steps leaves no step to run" in result.error["exception_message"]


@pytest.mark.parametrize(
    "latent,message",
    [
        ({"samples": torch.zeros(1, 4, 8, 8)}, "16 channels"),
        ({"samples": torch.zeros(1, 16, 7, 8)}, "must be even"),
        ({"nope": 1}, "must be {'samples'"),
    ],
)
def test_bad_latents_are_named(latent, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_latent(latent, "VAEDecode")


def test_load_image_round_trips_through_save_image(flux_runtime) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(flux_runtime.env.input_dir / "rt.png")
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "rt.png"}},
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["load", 0], "filename_prefix": "roundtrip"},
        },
    }
    result = run(flux_runtime, prompt)
    (saved,) = result.outputs["save"]["images"]
    assert saved == {"filename": "roundtrip_00001_.png", "subfolder": "", "type": "output"}
    with Image.open(flux_runtime.env.output_dir / saved["filename"]) as png:
        assert np.array_equal(np.asarray(png), pixels)
    image = output_of(flux_runtime, prompt, "load")
    assert image.shape == (1, 24, 40, 3) and image.dtype == torch.float32


def test_save_image_counts_up_and_never_overwrites(flux_runtime) -> None:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(flux_runtime.env.input_dir / "small.png")
    folder = flux_runtime.env.output_dir / "counting"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "n_00002_.png").write_bytes(b"someone else's file")
    names = []
    for i in range(2):
        prompt = {
            "load": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
            "save": {
                "class_type": "SaveImage",
                # a different prefix spelling each time, so the executor's cache does not answer
                "inputs": {
                    "images": ["load", 0],
                    "filename_prefix": "counting/n" if i == 0 else "counting//n",
                },
            },
        }
        names += [
            (i["subfolder"], i["filename"]) for i in run(flux_runtime, prompt).outputs["save"]["images"]
        ]
    assert names == [("counting", "n_00003_.png"), ("counting", "n_00004_.png")]
    assert (folder / "n_00002_.png").read_bytes() == b"someone else's file"


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs", "a/../../b", "sub/"])
def test_save_image_prefix_cannot_leave_output_folder(flux_runtime, prefix) -> None:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(flux_runtime.env.input_dir / "small.png")
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["load", 0], "filename_prefix": prefix}},
    }
    result = flux_runtime.executor.execute(prompt, "escape")
    assert result.status == "error" and result.error["node_type"] == "SaveImage"
    assert "filename_prefix" in result.error["exception_message"]
    assert not (flux_runtime.env.output_dir.parent / "escape_00001_.png").exists()


def test_preview_image_writes_temp_files(flux_runtime) -> None:
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(flux_runtime.env.input_dir / "small.png")
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["load", 0]}},
    }
    (shown,) = run(flux_runtime, prompt).outputs["show"]["images"]
    assert shown["type"] == "temp" and (flux_runtime.env.temp_dir / shown["filename"]).is_file()


def test_load_image_reruns_when_the_file_changes(flux_runtime) -> None:
    path = flux_runtime.env.input_dir / "changing.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "changing.png"}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["load", 0]}},
    }
    run(flux_runtime, prompt)
    assert "load" in run(flux_runtime, prompt).cached
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(path)
    result = run(flux_runtime, prompt)
    assert "load" in result.executed
    assert output_of(flux_runtime, prompt, "load").min().item() == 1.0


def test_unreadable_image_is_named(flux_runtime) -> None:
    (flux_runtime.env.input_dir / "broken.png").write_bytes(b"this is not a png")
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "broken.png"}},
        "show": {"class_type": "PreviewImage", "inputs": {"images": ["load", 0]}},
    }
    result = flux_runtime.executor.execute(prompt, "broken")
    assert result.status == "error" and result.error["node_type"] == "LoadImage"
    assert "cannot read input image 'broken.png'" in result.error["exception_message"]


def test_load_image_lists_input_files_for_upload(flux_runtime) -> None:
    sub = flux_runtime.env.input_dir / "sub"
    sub.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(sub / "nested.png")
    (flux_runtime.env.input_dir / "notes.txt").write_text("not an image")
    info = flux_runtime.registry.get("LoadImage").object_info(flux_runtime.env)
    choices, options = info["input"]["required"]["image"]
    assert "sub/nested.png" in choices and "notes.txt" not in choices
    assert options["image_upload"] is True


def test_empty_latent_size_not_a_multiple_of_16_is_floored_and_said(flux_runtime, caplog) -> None:
    from nodes.base import NodeContext

    node = flux_runtime.registry.get("EmptyLatent16ch")
    ctx = NodeContext(env=flux_runtime.env, node_id="e")
    with caplog.at_level("WARNING", logger="fluxloom.flux"):
        (latent,) = node.run(ctx, width=1000, height=1024, batch_size=2)
    assert latent["samples"].shape == (2, 16, 128, 124)
    assert "1000x1024 is not a multiple of 16; the image will be 992x1024" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fluxloom.flux"):
        node.run(ctx, width=1008, height=1024, batch_size=1)
    assert "multiple of 16" not in caplog.text


def test_workflows_saved_with_the_old_input_names_still_run(flux_runtime) -> None:
    """VAEDecode and VAEEncode took ComfyUI's input names (samples, pixels); prompts and UI
    workflows saved with fluxloom's earlier names (latent, image) give the same image."""
    s = Settings(width=32, height=32, steps=2, denoise=0.5, seed=5)
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(flux_runtime.env.input_dir / "old-names.png")
    new = img2img(s, "old-names.png")
    old = {k: {**v, "inputs": dict(v["inputs"])} for k, v in new.items()}
    old["enc"]["inputs"] = {"vae": ["vae", 0], "image": ["load", 0]}
    old["decode"]["inputs"] = {"vae": ["vae", 0], "latent": ["sample", 0]}
    run(flux_runtime, new)
    run(flux_runtime, old)
    assert torch.equal(output_of(flux_runtime, old, "decode"), output_of(flux_runtime, new, "decode"))


def test_load_image_gives_comfyui_mask(flux_runtime) -> None:
    """LoadImage outputs (IMAGE, MASK) as ComfyUI's: the mask is 1 - alpha, or 64x64 zeros."""
    rgba = np.zeros((8, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0  # the top half transparent
    Image.fromarray(rgba, "RGBA").save(flux_runtime.env.input_dir / "alpha.png")
    Image.new("RGB", (8, 8)).save(flux_runtime.env.input_dir / "opaque.png")
    load = flux_runtime.registry.get("LoadImage")
    ctx_env = flux_runtime.env
    from nodes.base import NodeContext

    image, mask = load.run(NodeContext(env=ctx_env), image="alpha.png")
    assert image.shape == (1, 8, 12, 3) and mask.shape == (1, 8, 12)
    assert torch.all(mask[0, :4] == 1) and torch.all(mask[0, 4:] == 0)
    _, none = load.run(NodeContext(env=ctx_env), image="opaque.png")
    assert none.shape == (1, 64, 64) and not none.any()
