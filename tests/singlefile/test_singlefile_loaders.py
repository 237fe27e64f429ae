"""fluxloom's loader nodes on ComfyUI's single files (issue: ComfyUI model files): the files are
offered by content, load through the same nodes as a diffusers folder, and give the same image
(fp32 files) or a close one (GGUF Q8_0); LoRAs stack, and strength 0 is the plain model exactly."""

from __future__ import annotations

import math
import shutil

import torch

from nodes.flux.demo import DEMO_NAME
from nodes.flux.demo_files import DEMO_FILES
from tests.flux.builders import Settings, output_of, run, txt2img

FILES = {kind: rel.split("/", 1)[1] for kind, rel in DEMO_FILES.items()}


def graph(transformer=DEMO_NAME, clip=DEMO_NAME, t5=DEMO_NAME, vae=DEMO_NAME, **settings) -> dict:
    s = Settings(source=DEMO_NAME, width=32, height=32, steps=2, seed=3, **settings)
    prompt = txt2img(s)
    for node, source in (("flux", transformer), ("clip", clip), ("t5", t5), ("vae", vae)):
        prompt[node]["inputs"]["source"] = source
    return prompt


def image(runtime, prompt: dict) -> torch.Tensor:
    run(runtime, prompt)
    return output_of(runtime, prompt, "decode")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def choices(runtime, class_type: str, name: str) -> list[str]:
    info = runtime.registry.get(class_type).object_info(runtime.env)
    return info["input"]["required"][name][0]


def test_loaders_offer_single_files_by_content(runtime, demo_models):
    assert FILES["transformer"] in choices(runtime, "LoadFluxTransformer", "source")
    assert FILES["gguf"] in choices(runtime, "LoadFluxTransformer", "source")
    assert FILES["checkpoint"] in choices(runtime, "LoadFluxTransformer", "source")
    assert FILES["clip_l"] in choices(runtime, "LoadCLIP", "source")
    assert FILES["t5xxl"] in choices(runtime, "LoadT5-8bit", "source")
    assert FILES["vae"] in choices(runtime, "LoadVAE", "source")
    # By content, not by folder or name: a T5 in clip/ is still only a T5; a CLIP-L is never a VAE.
    shutil.copy(demo_models / DEMO_FILES["t5xxl"], demo_models / "text_encoders" / "misnamed-vae.safetensors")
    try:
        assert "misnamed-vae.safetensors" in choices(runtime, "LoadT5-8bit", "source")
        assert "misnamed-vae.safetensors" not in choices(runtime, "LoadVAE", "source")
        assert FILES["clip_l"] not in choices(runtime, "LoadVAE", "source")
    finally:
        (demo_models / "text_encoders" / "misnamed-vae.safetensors").unlink()


def test_single_files_give_the_folders_image_exactly(runtime):
    folder = image(runtime, graph())
    files = image(
        runtime,
        graph(transformer=FILES["transformer"], clip=FILES["clip_l"], t5=FILES["t5xxl"], vae=FILES["vae"]),
    )
    assert torch.equal(files, folder)


def test_an_all_in_one_checkpoint_feeds_every_loader(runtime):
    ckpt = FILES["checkpoint"]
    assert torch.equal(
        image(runtime, graph(transformer=ckpt, clip=ckpt, t5=ckpt, vae=ckpt)), image(runtime, graph())
    )


def test_gguf_q8_0_is_close_to_the_folder(runtime):
    ours = image(runtime, graph(transformer=FILES["gguf"]))
    folder = image(runtime, graph())
    assert not torch.equal(ours, folder)  # it really is quantized
    assert psnr(ours, folder) > 35, psnr(ours, folder)


def with_lora(prompt: dict, strength: float, lora: str = FILES["lora"]) -> dict:
    prompt["lora"] = {
        "class_type": "LoadLoRA",
        "inputs": {"model": ["flux", 0], "lora": lora, "strength": strength},
    }
    prompt["sample"]["inputs"]["model"] = ["lora", 0]
    return prompt


def test_lora_strength_zero_is_the_plain_model_and_changes_rerun_the_sampler(runtime):
    plain = image(runtime, graph())
    assert torch.equal(image(runtime, with_lora(graph(), 0.0)), plain)
    strong = with_lora(graph(), 1.0)
    first = run(runtime, strong)
    assert "sample" in first.executed
    lora_image = output_of(runtime, strong, "decode")
    assert not torch.equal(lora_image, plain)
    weaker = with_lora(graph(), 0.5)
    result = run(runtime, weaker)
    assert "sample" in result.executed and "lora" in result.executed  # a new strength: a new model
    assert not torch.equal(output_of(runtime, weaker, "decode"), lora_image)
    assert torch.equal(image(runtime, graph()), plain)  # the plain model was never changed


def test_a_lora_that_does_not_fit_fails_in_its_node(runtime, demo_models, tmp_path):
    from nodes.flux.lora_formats import LoraPiece
    from nodes.flux.lora_writers import write_kohya

    big = {"transformer_blocks.0.attn.to_q": LoraPiece(torch.ones(2, 3072), torch.ones(3072, 2), 1.0)}
    write_kohya(demo_models / "loras" / "for-flux1-dev.safetensors", big)
    try:
        result = runtime.executor.execute(with_lora(graph(), 1.0, "for-flux1-dev.safetensors"), "bad-lora")
    finally:
        (demo_models / "loras" / "for-flux1-dev.safetensors").unlink()
    assert result.status == "error" and result.error["node_id"] == "lora"
    assert "for-flux1-dev.safetensors" in result.error["exception_message"]


def test_extra_model_paths_yaml_adds_folders(runtime, demo_models, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "unets"
    elsewhere.mkdir(parents=True)
    shutil.copy(demo_models / DEMO_FILES["transformer"], elsewhere / "shared-model.safetensors")
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"studio:\n  base_path: {tmp_path / 'elsewhere'}\n  diffusion_models: unets\n")
    env = runtime.env
    before = choices(runtime, "LoadFluxTransformer", "source")
    env.extra_model_paths = (yaml,)
    try:
        assert "shared-model.safetensors" in choices(runtime, "LoadFluxTransformer", "source")
        files = image(runtime, graph(transformer="shared-model.safetensors"))
        assert torch.equal(files, image(runtime, graph()))
    finally:
        env.extra_model_paths = ()
    assert choices(runtime, "LoadFluxTransformer", "source") == before
