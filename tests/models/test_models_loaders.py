"""Loader nodes and model sources: combos list what is installed, a missing model is a
validation error listing the installed ones, and the demo stands in for a missing model only when
it is all there is."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import nodes
from nodes.base import NodeContext, NodeEnv
from nodes.flux import quantization as q
from nodes.flux.demo import DEMO_NAME
from nodes.flux.handles import ModelHandle
from server.runtime import RuntimeConfig, attach_models
from server.validation import ValidationError, validate_prompt


def make_env(models_dir, tmp_path, ensure_demo=False) -> NodeEnv:
    env = NodeEnv(models_dir=models_dir, output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    attach_models(env, RuntimeConfig(models_dir=models_dir, ensure_demo_model=ensure_demo))
    return env


def t5_prompt(source: str) -> dict:
    return {
        "1": {
            "class_type": "LoadT5-8bit",
            "inputs": {"source": source, "quantization": q.INT8_BNB, "dtype": "auto"},
        },
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
    }


def add_real_model(models_dir, demo_path, name="my-flux"):
    shutil.copytree(demo_path, models_dir / "diffusers" / name)
    (models_dir / "diffusers" / name / "fluxloom_demo.json").unlink()


def test_source_combos_list_installed_flux_pipelines(models_dir, demo_path, tmp_path):
    add_real_model(models_dir, demo_path, "my-flux")
    (models_dir / "diffusers" / "empty-folder").mkdir()
    sd = models_dir / "diffusers" / "some-sd15"
    sd.mkdir()
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    env = make_env(models_dir, tmp_path)
    info = nodes.load_all().object_info(env)
    for loader in ("LoadCLIP", "LoadT5-8bit", "LoadFluxTransformer", "LoadVAE"):
        assert info[loader]["input"]["required"]["source"][0] == [DEMO_NAME, "my-flux"]
    assert info["LoadT5-8bit"]["input"]["required"]["quantization"][0] == list(q.CHOICES)
    assert info["LoadT5-8bit"]["input"]["required"]["quantization"][1]["default"] == q.INT8_BNB
    assert info["LoadFluxTransformer"]["input"]["required"]["quantization"][1]["default"] == q.INT8_BNB
    assert info["LoadCLIP"]["input"]["required"]["dtype"][0] == ["auto", "bf16", "fp16", "fp32"]
    assert info["LoadT5-8bit"]["output"] == ["T5"]
    assert info["LoadFluxTransformer"]["output"] == ["FLUX_MODEL"]


def test_a_pipeline_without_the_part_is_not_offered_for_it(models_dir, demo_path, tmp_path):
    add_real_model(models_dir, demo_path, "no-vae")
    shutil.rmtree(models_dir / "diffusers" / "no-vae" / "vae")
    env = make_env(models_dir, tmp_path)
    info = nodes.load_all().object_info(env)
    assert info["LoadVAE"]["input"]["required"]["source"][0] == [DEMO_NAME]
    assert info["LoadCLIP"]["input"]["required"]["source"][0] == [DEMO_NAME, "no-vae"]


def test_loaders_return_handles_without_reading_weights(models_dir, demo_path, tmp_path):
    env = make_env(models_dir, tmp_path)
    registry = nodes.load_all()
    ctx = NodeContext(env=env, node_id="1")
    (h,) = registry.get("LoadFluxTransformer").run(
        ctx, source=DEMO_NAME, quantization=q.INT8_BNB, dtype="bf16"
    )
    assert h == ModelHandle("FLUX_MODEL", DEMO_NAME, str(demo_path), q.INT8_BNB, "bf16")
    (clip,) = registry.get("LoadCLIP").run(ctx, source=DEMO_NAME, dtype="auto")
    assert clip.kind == "CLIP" and clip.quantization == "none"
    assert env.models.stats()["loaded"] == [] and env.models.events == []


def test_missing_model_with_a_real_one_installed_lists_the_choices(models_dir, demo_path, tmp_path):
    add_real_model(models_dir, demo_path, "my-flux")
    env = make_env(models_dir, tmp_path)
    with pytest.raises(ValidationError) as info:
        validate_prompt(t5_prompt("FLUX.1-dev"), nodes.load_all(), env)
    (error,) = info.value.node_errors["1"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == f"source: 'FLUX.1-dev' not in [{DEMO_NAME}, my-flux]"


def test_demo_substitution_when_only_the_demo_is_installed(models_dir, tmp_path):
    env = make_env(models_dir, tmp_path)
    vp = validate_prompt(t5_prompt("FLUX.1-dev"), nodes.load_all(), env)
    assert vp.prompt["1"]["inputs"]["source"] == DEMO_NAME
    assert vp.warnings == [
        "source 'FLUX.1-dev' is not installed; using the demo model fluxloom-demo "
        "(random weights: images are noise)"
    ]
    assert env.models.stats()["demo_only"] is True


def test_no_model_at_all_is_listed_as_none_installed(tmp_path):
    env = make_env(tmp_path / "empty-models", tmp_path)
    with pytest.raises(ValidationError) as info:
        validate_prompt(t5_prompt("FLUX.1-dev"), nodes.load_all(), env)
    assert "(none installed)" in info.value.node_errors["1"]["errors"][0]["details"]


def test_setup_creates_the_demo_model_only_when_nothing_is_installed(tmp_path, caplog):
    empty = tmp_path / "models"
    with caplog.at_level(logging.INFO, "fluxloom.models"):
        env = make_env(empty, tmp_path, ensure_demo=True)
    assert (empty / "diffusers" / DEMO_NAME / "model_index.json").is_file()
    assert "creating the demo model" in caplog.text
    assert env.models.stats()["demo_only"] is True
    # With a real model present, nothing is written.
    other = tmp_path / "other"
    add_real_model_from = empty / "diffusers" / DEMO_NAME
    (other / "diffusers").mkdir(parents=True)
    shutil.copytree(add_real_model_from, other / "diffusers" / "my-flux")
    make_env(other, tmp_path, ensure_demo=True)
    assert not (other / "diffusers" / DEMO_NAME).exists()


def test_nf4_t5_fails_in_the_loader_node_with_a_clear_message(models_dir, demo_path, tmp_path):
    from transformers import T5Config, T5EncoderModel

    te = demo_path / "text_encoder_2"
    config = T5Config.from_pretrained(te)
    config.d_model, config.d_kv = 40, 20
    shutil.rmtree(te)
    T5EncoderModel(config).save_pretrained(te)
    env = make_env(models_dir, tmp_path)
    ctx = NodeContext(env=env, node_id="1")
    with pytest.raises(q.QuantizationError, match="multiple of 64"):
        nodes.load_all().get("LoadT5-8bit").run(ctx, source=DEMO_NAME, quantization=q.NF4_BNB, dtype="auto")


def test_setup_puts_the_example_input_where_load_image_finds_it(models_dir, tmp_path):
    env = make_env(models_dir, tmp_path)
    assert (env.input_dir / "fluxloom-example.png").is_file()
    info = nodes.load_all().object_info(env)
    assert "fluxloom-example.png" in info["LoadImage"]["input"]["required"]["image"][0]
    # A user's own file of that name is never overwritten.
    (env.input_dir / "fluxloom-example.png").write_bytes(b"mine")
    make_env(models_dir, tmp_path)
    assert (env.input_dir / "fluxloom-example.png").read_bytes() == b"mine"
