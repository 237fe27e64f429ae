"""Detection by content (headers only, cached) and discovery of ComfyUI's model folders and
extra_model_paths.yaml, on real safetensors and GGUF files written in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nodes.flux.demo import build_tiny_flux
from nodes.flux.formats import detect
from nodes.flux.formats.detect import Detected, detect_file
from nodes.flux.formats.discovery import (
    ExtraModelPathsError,
    find_model_files,
    model_folders,
    read_extra_model_paths,
)
from tests.formats import encoder_files as ef

W = 32  # the width of the fake transformers: detection reads shapes only


def t(*shape, dtype=torch.bfloat16) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


def bfl_transformer(prefix: str = "", guidance: bool = True, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """The keys of a FLUX.1 transformer in BFL's layout (one double, one single block)."""
    state = {
        "img_in.weight": t(W, 64, dtype=dtype),
        "img_in.bias": t(W),
        "txt_in.weight": t(W, 64, dtype=dtype),
        "time_in.in_layer.weight": t(W, 256, dtype=dtype),
        "vector_in.in_layer.weight": t(W, 32, dtype=dtype),
        "double_blocks.0.img_attn.qkv.weight": t(3 * W, W, dtype=dtype),
        "double_blocks.0.img_attn.norm.query_norm.scale": t(16),
        "double_blocks.0.txt_mlp.0.weight": t(4 * W, W, dtype=dtype),
        "single_blocks.0.linear1.weight": t(7 * W, W, dtype=dtype),
        "single_blocks.0.linear2.weight": t(W, 5 * W, dtype=dtype),
        "final_layer.linear.weight": t(64, W, dtype=dtype),
    }
    if guidance:
        state["guidance_in.in_layer.weight"] = t(W, 256, dtype=dtype)
    return {prefix + k: v for k, v in state.items()}


def ldm_vae(prefix: str = "", latent: int = 16) -> dict[str, torch.Tensor]:
    state = {
        "encoder.conv_in.weight": t(8, 3, 3, 3),
        "encoder.down.0.block.0.conv1.weight": t(8, 8, 3, 3),
        "encoder.conv_out.weight": t(2 * latent, 8, 3, 3),
        "decoder.conv_in.weight": t(8, latent, 3, 3),
        "decoder.conv_out.weight": t(3, 8, 3, 3),
    }
    return {prefix + k: v for k, v in state.items()}


def write(path: Path, state: dict[str, torch.Tensor]) -> Path:
    return ef.write(state, path)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("disc") / "tiny", seed=5)


def write_gguf(path: Path, names: dict[str, tuple[int, int]]) -> Path:
    """A GGUF file with Q8_0 weights under BFL's names, as city96's FLUX GGUF files."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "flux")
    for name, shape in names.items():
        values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        data = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- detection ------------------------------------------------------------------------------


def test_flux_transformers_in_every_layout(tmp_path, pipeline):
    dev = detect_file(write(tmp_path / "flux1-dev.safetensors", bfl_transformer()))
    assert dev == Detected("FLUX_MODEL", "bfl", "", (), "BF16", False, True)
    schnell = detect_file(write(tmp_path / "schnell.sft", bfl_transformer(guidance=False)))
    assert (schnell.kind, schnell.guidance) == ("FLUX_MODEL", False)
    fp8 = bfl_transformer(dtype=torch.float8_e4m3fn) | {"scaled_fp8": t(0, dtype=torch.float8_e4m3fn)}
    scaled = detect_file(write(tmp_path / "flux1-krea-dev_fp8_scaled.safetensors", fp8))
    assert (scaled.dtype, scaled.scaled_fp8) == ("F8_E4M3", True)
    prefixed = detect_file(
        write(tmp_path / "prefixed.safetensors", bfl_transformer("model.diffusion_model."))
    )
    assert (prefixed.kind, prefixed.prefix, prefixed.parts) == ("FLUX_MODEL", "model.diffusion_model.", ())
    diffusers = detect_file(pipeline / "transformer" / "diffusion_pytorch_model.safetensors")
    assert (diffusers.kind, diffusers.layout, diffusers.guidance, diffusers.dtype) == (
        "FLUX_MODEL",
        "diffusers",
        True,
        "F32",
    )
    names = {k: tuple(v.shape) for k, v in bfl_transformer().items() if v.ndim == 2}
    gguf = detect_file(write_gguf(tmp_path / "flux1-dev-Q8_0.gguf", names))
    assert (gguf.kind, gguf.layout, gguf.dtype, gguf.guidance) == ("FLUX_MODEL", "gguf", "Q8_0", True)


def test_all_in_one_checkpoint_lists_its_parts(tmp_path, pipeline):
    state = bfl_transformer("model.diffusion_model.") | ldm_vae("vae.")
    state |= {f"text_encoders.clip_l.transformer.{k}": v for k, v in ef.clip_l_state(pipeline).items()}
    state |= {f"text_encoders.t5xxl.transformer.{k}": v for k, v in ef.t5_state(pipeline).items()}
    found = detect_file(write(tmp_path / "flux1-dev-fp8.safetensors", state))
    assert (found.kind, found.parts, found.prefix) == (
        "CHECKPOINT",
        ("FLUX_MODEL", "CLIP", "T5", "VAE"),
        "model.diffusion_model.",
    )
    no_t5 = {k: v for k, v in state.items() if "t5xxl" not in k}
    assert detect_file(write(tmp_path / "no_t5.safetensors", no_t5)).parts == ("FLUX_MODEL", "CLIP", "VAE")


def test_text_encoders_and_vaes(tmp_path, pipeline):
    clip = detect_file(write(tmp_path / "clip_l.safetensors", ef.clip_l_state(pipeline)))
    assert (clip.kind, clip.layout, clip.prefix) == ("CLIP", "transformers", "")
    folder_clip = detect_file(
        pipeline / "text_encoder" / "model.safetensors"
    )  # transformers 5: no text_model.
    assert folder_clip.kind == "CLIP"
    t5 = detect_file(
        write(tmp_path / "t5xxl_fp16.safetensors", ef.cast(ef.t5_state(pipeline), torch.float16))
    )
    assert (t5.kind, t5.dtype) == ("T5", "F16")
    scaled = detect_file(write(tmp_path / "t5_scaled.safetensors", ef.to_scaled_fp8(ef.t5_state(pipeline))))
    assert (scaled.kind, scaled.dtype, scaled.scaled_fp8) == ("T5", "F8_E4M3", True)
    assert detect_file(write(tmp_path / "ae.safetensors", ldm_vae())) == Detected(
        "VAE", "bfl", "", (), "BF16"
    )
    diffusers_vae = detect_file(pipeline / "vae" / "diffusion_pytorch_model.safetensors")
    assert (diffusers_vae.kind, diffusers_vae.layout) == ("VAE", "diffusers")


def test_what_fluxloom_does_not_offer(tmp_path, pipeline):
    clip_g = {"text_model.embeddings.token_embedding.weight": t(49408, 1280)}
    clip_g["text_model.encoder.layers.0.mlp.fc1.weight"] = t(5120, 1280)
    umt5 = ef.t5_state(pipeline)
    umt5["shared.weight"] = t(256384, 64)
    old_t5 = {k.replace("wi_0", "wi"): v for k, v in ef.t5_state(pipeline).items() if "wi_1" not in k}
    sdxl = {
        "model.diffusion_model.input_blocks.0.0.weight": t(320, 4, 3, 3),
        **{f"conditioner.embedders.0.transformer.{k}": v for k, v in ef.clip_l_state(pipeline).items()},
        **ldm_vae("first_stage_model.", latent=4),
    }
    sdxl_lora = {"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": t(4, 640)}
    sd3_lora = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": t(4, 64)}
    offered = {
        "clip_g.safetensors": clip_g,
        "umt5.safetensors": umt5,
        "t5_v1_0.safetensors": old_t5,
        "sd15_vae.safetensors": ldm_vae(latent=4),
        "sdxl.safetensors": sdxl,
        "sdxl_lora.safetensors": sdxl_lora,
        "sd3_lora.safetensors": sd3_lora,
        "flux_fill.safetensors": {**bfl_transformer(), "img_in.weight": t(W, 384)},
        "chroma.safetensors": {k: v for k, v in bfl_transformer().items() if "vector_in" not in k},
    }
    for name, state in offered.items():
        assert detect_file(write(tmp_path / name, state)) is None, name
    (tmp_path / "random.safetensors").write_bytes(os.urandom(4096))
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("a cat")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x02pickle")
    for name in ("random.safetensors", "empty.gguf", "notes.txt", "model.ckpt", "missing.safetensors"):
        assert detect_file(tmp_path / name) is None, name


@pytest.mark.parametrize(
    ("layout", "keys"),
    [
        (
            "kohya",
            [
                "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                "lora_unet_double_blocks_0_img_attn_qkv.alpha",
            ],
        ),
        ("kohya", ["lora_transformer_single_transformer_blocks_0_attn_to_q.lora_down.weight"]),
        ("kohya", ["diffusion_model.double_blocks.0.img_attn.proj.lora_down.weight"]),  # ComfyUI's spelling
        (
            "peft",
            [
                "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
                "transformer.transformer_blocks.0.attn.to_k.lora_B.weight",
            ],
        ),
        (
            "peft",
            ["double_blocks.0.img_attn.qkv.lora_A.weight", "single_blocks.1.linear1.lora_B.weight"],
        ),  # BFL names
        ("fal-kontext", ["base_model.model.single_transformer_blocks.3.proj_out.lora_B.weight"]),
        (
            "xlabs",
            [
                "double_blocks.0.processor.proj_lora1.down.weight",
                "double_blocks.0.processor.qkv_lora1.up.weight",
            ],
        ),
    ],
)
def test_flux_loras_in_every_layout(tmp_path, layout, keys):
    found = detect_file(write(tmp_path / "lora.safetensors", {k: t(4, 16) for k in keys}))
    assert (found.kind, found.layout) == ("LORA", layout)


def test_detection_reads_headers_once_per_file_version(tmp_path, monkeypatch):
    path = write(tmp_path / "ae.safetensors", ldm_vae())
    calls = []
    real = detect.read_table
    monkeypatch.setattr(detect, "read_table", lambda p: calls.append(p) or real(p))
    detect.clear_cache()
    assert detect_file(path).kind == "VAE" and detect_file(path).kind == "VAE" and len(calls) == 1
    write(path, bfl_transformer())  # a new file under the same name: new size and mtime
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert detect_file(path).kind == "FLUX_MODEL" and len(calls) == 2


# --- discovery ------------------------------------------------------------------------------


@pytest.fixture
def comfy(tmp_path, pipeline) -> Path:
    """A ComfyUI install: ComfyUI/models/{diffusion_models,unet,checkpoints,text_encoders,clip,
    vae,loras} with files named as the official templates name them."""
    models = tmp_path / "ComfyUI" / "models"
    write(models / "diffusion_models" / "flux1-dev.safetensors", bfl_transformer())
    write(models / "unet" / "flux" / "flux1-schnell.safetensors", bfl_transformer(guidance=False))
    names = {k: tuple(v.shape) for k, v in bfl_transformer().items() if v.ndim == 2}
    write_gguf(models / "unet" / "flux1-dev-Q8_0.gguf", names)
    all_in_one = bfl_transformer("model.diffusion_model.") | ldm_vae("vae.")
    write(models / "checkpoints" / "flux1-dev-fp8.safetensors", all_in_one)
    sdxl = {
        "model.diffusion_model.input_blocks.0.0.weight": t(320, 4, 3, 3),
        **ldm_vae("first_stage_model.", 4),
    }
    write(models / "checkpoints" / "sd_xl_base_1.0.safetensors", sdxl)
    write(models / "checkpoints" / "misplaced_t5.safetensors", ef.t5_state(pipeline))
    write(models / "text_encoders" / "clip_l.safetensors", ef.clip_l_state(pipeline))
    write(models / "clip" / "t5" / "t5xxl_fp16.safetensors", ef.cast(ef.t5_state(pipeline), torch.float16))
    write(models / "vae" / "ae.safetensors", ldm_vae())
    write(models / "vae" / "sd15.safetensors", ldm_vae(latent=4))
    write(
        models / "loras" / "style" / "anime.safetensors",
        {"lora_unet_single_blocks_0_linear1.lora_down.weight": t(4, W)},
    )
    (models / "loras" / ".hidden.safetensors").write_bytes(b"x")
    (models / "vae" / "readme.txt").write_text("put ae.safetensors here")
    return models


def test_find_model_files_by_content(comfy):
    found = find_model_files(comfy)
    assert found == {
        "FLUX_MODEL": {
            "flux/flux1-schnell.safetensors": comfy / "unet" / "flux" / "flux1-schnell.safetensors",
            "flux1-dev-Q8_0.gguf": comfy / "unet" / "flux1-dev-Q8_0.gguf",
            "flux1-dev.safetensors": comfy / "diffusion_models" / "flux1-dev.safetensors",
        },
        "CHECKPOINT": {"flux1-dev-fp8.safetensors": comfy / "checkpoints" / "flux1-dev-fp8.safetensors"},
        "CLIP": {"clip_l.safetensors": comfy / "text_encoders" / "clip_l.safetensors"},
        "T5": {
            "misplaced_t5.safetensors": comfy / "checkpoints" / "misplaced_t5.safetensors",
            "t5/t5xxl_fp16.safetensors": comfy / "clip" / "t5" / "t5xxl_fp16.safetensors",
        },
        "VAE": {"ae.safetensors": comfy / "vae" / "ae.safetensors"},
        "LORA": {"style/anime.safetensors": comfy / "loras" / "style" / "anime.safetensors"},
    }
    assert find_model_files(comfy.parent / "no-such-models") == {kind: {} for kind in detect.KINDS}


def test_listing_a_folder_again_reads_no_header(comfy, monkeypatch):
    calls = []
    real = detect.read_table
    monkeypatch.setattr(detect, "read_table", lambda p: calls.append(p) or real(p))
    detect.clear_cache()
    first = find_model_files(comfy)
    read = len(calls)
    assert read == 11 and find_model_files(comfy) == first and len(calls) == read


def test_extra_model_paths_yaml(comfy, tmp_path, pipeline, monkeypatch):
    """ComfyUI's format: sections with base_path, legacy folder names, multi-line values, lists,
    is_default; found next to the models folder automatically."""
    shared = tmp_path / "shared models"
    write(
        shared / "Lora" / "detail.safetensors",
        {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": t(4, W)},
    )
    write(
        shared / "LyCORIS" / "kohya.safetensors",
        {"lora_unet_double_blocks_0_img_mlp_0.lora_up.weight": t(W, 4)},
    )
    write(shared / "encoders" / "clip_l.safetensors", ef.clip_l_state(pipeline))  # same name as models/'s
    write(shared / "vae" / "flux_ae.safetensors", ldm_vae())
    monkeypatch.setenv("SHARED_MODELS", str(shared))
    yaml_file = tmp_path / "paths.yaml"
    yaml_file.write_text(
        "a1111:\n"
        "    base_path: $SHARED_MODELS\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "         Lora\n"
        "         LyCORIS\n"
        "    clip: encoders\n"
        "    controlnet: models/ControlNet\n"
        "other:\n"
        "    vae: [shared models/vae]\n"
        "empty:\n",
        encoding="utf-8",
    )
    found = find_model_files(comfy, [yaml_file])
    assert found["LORA"]["detail.safetensors"] == shared / "Lora" / "detail.safetensors"
    assert found["LORA"]["kohya.safetensors"] == shared / "LyCORIS" / "kohya.safetensors"
    assert (
        found["VAE"]["flux_ae.safetensors"] == shared / "vae" / "flux_ae.safetensors"
    )  # relative to the yaml
    assert (
        found["CLIP"]["clip_l.safetensors"] == comfy / "text_encoders" / "clip_l.safetensors"
    )  # models/ first
    yaml_file.write_text(yaml_file.read_text().replace("a1111:\n", "a1111:\n    is_default: true\n"))
    assert (
        find_model_files(comfy, [yaml_file])["CLIP"]["clip_l.safetensors"]
        == shared / "encoders" / "clip_l.safetensors"
    )
    # ComfyUI reads extra_model_paths.yaml from its own folder, the models folder's parent.
    (comfy.parent / "extra_model_paths.yaml").write_text(f"mine:\n  base_path: {shared}\n  loras: Lora\n")
    assert "detail.safetensors" in find_model_files(comfy)["LORA"]
    assert model_folders(comfy)["loras"] == [comfy / "loras", shared / "Lora"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a1111:\n  base_path: [unclosed\n", r"is not valid YAML: .* at line \d+, column"),
        ("- models/loras\n", "expected named sections .* found a list"),
        ("a1111: models/loras\n", "section 'a1111' must map folder names to paths, not be a str"),
        ("a1111:\n  loras: 3\n", "section 'a1111': 'loras' must be a folder path.*found 3"),
        ("a1111:\n  is_default: yes please\n  loras: x\n", "is_default must be true or false"),
        ("a1111:\n  base_path: ''\n  loras: x\n", "base_path must be a folder path"),
    ],
)
def test_malformed_yaml_names_the_file_and_the_problem(tmp_path, text, problem):
    bad = tmp_path / "extra_model_paths.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ExtraModelPathsError, match=f"{bad}.*{problem}"):
        read_extra_model_paths(bad)


def test_a_missing_yaml_given_explicitly_is_an_error(tmp_path):
    with pytest.raises(ExtraModelPathsError, match="cannot read .*nowhere.yaml"):
        find_model_files(tmp_path, [tmp_path / "nowhere.yaml"])
