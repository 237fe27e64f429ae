"""The demo model builder: a complete, deterministic diffusers FLUX pipeline written offline, the
`fluxloom demo-model` command, and the ModelOffload node's two modes."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import nodes
from nodes.flux.demo import DEMO_MARKER, DEMO_NAME, PRESETS, _t5, _transformer, build_tiny_flux
from server.cli import main as cli_main
from server.runtime import RuntimeConfig, create_runtime


def digests(path):
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def test_same_seed_same_files_other_seed_other_weights(tmp_path, demo_source):
    again = build_tiny_flux(tmp_path / "again", seed=0)
    assert digests(again) == digests(demo_source)
    other = digests(build_tiny_flux(tmp_path / "other", seed=1))
    assert (
        other["transformer/diffusion_pytorch_model.safetensors"]
        != digests(demo_source)["transformer/diffusion_pytorch_model.safetensors"]
    )


def test_demo_loads_as_a_flux_dev_pipeline(demo_source):
    from diffusers import FluxPipeline
    from transformers import AutoTokenizer

    pipe = FluxPipeline.from_pretrained(demo_source, dtype=torch.float32)
    sched = pipe.scheduler.config
    assert (sched.shift, sched.use_dynamic_shifting, sched.base_shift, sched.max_shift) == (
        3.0,
        True,
        0.5,
        1.15,
    )
    assert (sched.base_image_seq_len, sched.max_image_seq_len) == (256, 4096)
    vae = pipe.vae.config
    assert vae.latent_channels == 16 and 2 ** (len(vae.block_out_channels) - 1) == 8
    assert (vae.scaling_factor, vae.shift_factor) == (0.3611, 0.1159)
    assert pipe.transformer.config.guidance_embeds is True
    assert pipe.transformer.config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert pipe.transformer.config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    tok = pipe.tokenizer
    clip = pipe.text_encoder.config
    assert (clip.bos_token_id, clip.eos_token_id, clip.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert len(tok("a cat", padding="max_length", max_length=77).input_ids) == 77
    t5 = AutoTokenizer.from_pretrained(demo_source, subfolder="tokenizer_2")
    assert t5.unk_token_id not in t5("A cat holding a sign").input_ids
    with torch.no_grad():
        image = pipe(
            "a cat",
            height=64,
            width=64,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    assert json.loads((demo_source / DEMO_MARKER).read_text())["preset"] == "tiny"


def test_schnell_like_model_has_no_guidance_embedding(tmp_path):
    from diffusers import FluxTransformer2DModel

    path = build_tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    assert FluxTransformer2DModel.load_config(path / "transformer")["guidance_embeds"] is False


def test_medium_preset_sizes():
    """>= 1 GB of fp32 weights with the transformer larger than T5 (counted on the meta device,
    without building it)."""
    from nodes.flux.demo import build_t5_tokenizer

    p = PRESETS["medium"]
    with torch.device("meta"):
        transformer = _transformer(p, True)
        t5 = _t5(p, build_t5_tokenizer())
    t_bytes = sum(x.numel() * 4 for x in transformer.parameters())
    t5_bytes = sum(x.numel() * 4 for x in t5.parameters())
    assert t_bytes > 2 * t5_bytes and t_bytes + t5_bytes >= 10**9


def test_demo_model_command(tmp_path, capsys):
    models = tmp_path / "models"
    assert cli_main(["demo-model", "--models", str(models)]) == 0
    dest = models / "diffusers" / DEMO_NAME
    assert (dest / "model_index.json").is_file() and str(dest) in capsys.readouterr().out
    before = (dest / "model_index.json").stat().st_mtime_ns
    assert cli_main(["demo-model", "--models", str(models)]) == 0
    assert "exists" in capsys.readouterr().out
    assert (dest / "model_index.json").stat().st_mtime_ns == before
    assert cli_main(["demo-model", "--models", str(models), "--force"]) == 0
    assert not [p for p in (models / "diffusers").iterdir() if p.name != DEMO_NAME]  # no staging left


@pytest.mark.parametrize(("mode", "location"), [("offload to CPU RAM", "cpu"), ("release", "none")])
def test_model_offload_node_modes(tmp_path, models_dir, mode, location):
    rt = create_runtime(
        RuntimeConfig(
            models_dir=models_dir,
            output_dir=tmp_path / "out",
            input_dir=tmp_path / "in",
            temp_dir=tmp_path / "temp",
            ensure_demo_model=False,
        )
    )
    prompt = {
        "1": {"class_type": "LoadCLIP", "inputs": {"source": DEMO_NAME, "dtype": "auto"}},
        "2": {
            "class_type": "LoadT5-8bit",
            "inputs": {"source": DEMO_NAME, "quantization": "none", "dtype": "auto"},
        },
        "3": {
            "class_type": "EncodePrompt",
            "inputs": {
                "clip": ["1", 0],
                "t5": ["2", 0],
                "prompt": "a cat",
                "prompt_2": "",
                "max_sequence_length": 16,
            },
        },
        "4": {"class_type": "ModelOffload", "inputs": {"model": ["2", 0], "value": ["3", 0], "mode": mode}},
        "5": {"class_type": "ShowValue", "inputs": {"value": ["4", 0]}},
    }
    result = rt.executor.execute(prompt, "offload")
    assert result.ok, result.error
    manager = rt.env.models
    assert [e.action for e in manager.events if e.kind == "T5"][0] == "load"
    clip = next(h for h in manager.on_device() if h.kind == "CLIP")
    t5 = type(clip)("T5", DEMO_NAME, clip.path, "none", "auto")
    assert manager.location(t5) == location
    assert manager.location(clip) == "device"  # CLIP was not asked to leave
    # The value passed through is EncodePrompt's conditioning, not the model.
    shown = result.outputs["5"]["text"][0]
    assert "ModelHandle" not in shown and shown
    assert nodes.load_all().get("ModelOffload").outputs[0].type == "*"
