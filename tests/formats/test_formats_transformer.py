"""Single-file FLUX transformers (BFL layout, diffusers layout, all-in-one): the same weights as a
diffusers folder give the very same model, bit for bit; every quantization choice still works;
bad files fail with a message that names the problem."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.flux import quantization as q
from nodes.flux.formats import (
    FormatError,
    estimate_file_bytes,
    load_transformer_file,
    split_checkpoint,
    writers,
)
from nodes.flux.formats.bfl_transformer import ROPE_METADATA, convert_state_dict, to_bfl
from nodes.flux.formats.checkpoint_split import TensorFile
from server.models import module_bytes
from tests.formats.helpers import forward, psnr, reference, sampled

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


@pytest.mark.parametrize("variant", ["dev", "schnell"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_bfl_file_gives_the_same_model_as_the_diffusers_folder(tiny_pipelines, tmp_path, variant, dtype):
    ref = reference(tiny_pipelines[variant], dtype=dtype)
    file = writers.write_bfl_transformer(ref, tmp_path / "flux.safetensors", dtype=DTYPES[dtype])
    model = load_transformer_file(file, q.NONE, dtype, "cpu")
    assert public(model.config) == public(ref.config)
    assert model.state_dict().keys() == ref.state_dict().keys()
    out = forward(model, DTYPES[dtype])
    assert out.std() > 0.1  # the comparison is not between two zero outputs
    assert torch.equal(out, forward(ref, DTYPES[dtype]))
    assert torch.equal(sampled(model, DTYPES[dtype], steps=2), sampled(ref, DTYPES[dtype], steps=2))


def test_auto_dtype_keeps_the_stored_dtype_on_the_cpu(dev_files):
    assert load_transformer_file(dev_files["bfl-fp32"], q.NONE, "auto").dtype == torch.float32
    assert load_transformer_file(dev_files["bfl-bf16"], q.NONE, "auto").dtype == torch.bfloat16


def test_diffusers_layout_file_and_all_in_one_give_the_same_model(tiny_pipelines, dev_files):
    ref = reference(tiny_pipelines["dev"])
    expected = sampled(ref, torch.float32)
    for name in ("diffusers-fp32", "all-in-one"):
        model = load_transformer_file(dev_files[name], q.NONE, torch.float32)
        assert torch.equal(sampled(model, torch.float32), expected), name


def test_all_in_one_parts_hold_each_model_in_its_own_layout(tiny_pipelines, dev_files):
    parts = split_checkpoint(dev_files["all-in-one"])
    assert set(parts) == {"transformer", "vae", "clip_l", "t5xxl"}
    assert parts["transformer"].prefix == "model.diffusion_model."
    assert "double_blocks.0.img_attn.qkv.weight" in parts["transformer"].keys()
    assert "encoder.down.0.block.0.conv1.weight" in parts["vae"].keys()
    # Below their prefixes the text encoders are in transformers' layout, tensor for tensor.
    clip = reference(tiny_pipelines["dev"], "CLIP")
    t5 = reference(tiny_pipelines["dev"], "T5")
    for part, module in ((parts["clip_l"], clip), (parts["t5xxl"], t5)):
        expected = writers.text_encoder_state(module)
        assert sorted(part.keys()) == sorted(expected)
        with part:
            assert all(torch.equal(part.read(k), v) for k, v in expected.items())


def test_conversion_round_trip_is_exact(tiny_pipelines):
    ref = reference(tiny_pipelines["dev"])
    state = {k: v.detach() for k, v in ref.state_dict().items()}
    bfl = to_bfl(state, dict(ref.config))
    assert "single_blocks.0.linear1.weight" in bfl and "transformer_blocks.0.attn.to_q.weight" not in bfl
    config, back = convert_state_dict(bfl, {ROPE_METADATA: "8,12,12"})
    assert public(config) == public(ref.config)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


# PSNR (dB) of 4-step latents against the fp32 folder; measured: int8 bnb 65, nf4 40, torchao 68.
CHOICE_PSNR = {q.INT8_BNB: 58.0, q.NF4_BNB: 35.0, q.INT8_TORCHAO: 58.0}


@pytest.mark.parametrize("choice", [q.INT8_BNB, q.NF4_BNB, q.INT8_TORCHAO])
def test_every_quantization_choice_loads_a_bfl_file_on_the_cpu(tiny_pipelines, dev_files, choice):
    model = load_transformer_file(dev_files["bfl-fp32"], choice, torch.float32, "cpu")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    plain = [m for m in linears if type(m.weight) is torch.nn.Parameter and m.weight.dtype == torch.float32]
    assert len(plain) < 5  # nearly every Linear layer is the backend's (nf4 needs in % 64 == 0)
    ref = reference(tiny_pipelines["dev"])
    assert module_bytes(model) < 0.4 * module_bytes(ref)
    assert psnr(sampled(ref, torch.float32), sampled(model, torch.float32)) > CHOICE_PSNR[choice]


def test_estimate_is_the_loaded_size(dev_files):
    for name in ("bfl-fp32", "bfl-bf16", "e4m3fn", "scaled", "Q8_0", "Q4_0"):
        dtype = torch.float32 if name == "bfl-fp32" else torch.bfloat16
        model = load_transformer_file(dev_files[name], q.NONE, dtype)
        # exact but for scaled fp8's per-tensor scales (4 bytes per Linear)
        assert abs(estimate_file_bytes(dev_files[name], q.NONE, dtype) - module_bytes(model)) <= 4 * 64, name


def test_a_narrow_model_without_its_rope_axes_is_refused(dev_files, tmp_path):
    tensors = load_file(dev_files["bfl-fp32"])
    save_file(tensors, tmp_path / "no-metadata.safetensors")  # head dim 32, no fluxloom.axes_dims_rope
    with pytest.raises(FormatError, match="axes_dims_rope"):
        load_transformer_file(tmp_path / "no-metadata.safetensors")
    save_file(tensors, tmp_path / "bad.safetensors", metadata={ROPE_METADATA: "8,8,8"})
    with pytest.raises(FormatError, match="summing to the head size 32"):
        load_transformer_file(tmp_path / "bad.safetensors")


def test_files_that_are_not_a_complete_flux_transformer_are_named(dev_files, tmp_path):
    with pytest.raises(FormatError, match="not a FLUX.1 transformer"):
        load_transformer_file(dev_files["vae"])
    file = TensorFile(dev_files["bfl-fp32"])
    tensors = load_file(dev_files["bfl-fp32"])
    del tensors["double_blocks.0.txt_attn.qkv.bias"]
    save_file(tensors, tmp_path / "partial.safetensors", metadata=file.metadata)
    with pytest.raises(FormatError, match=r"lacks double_blocks\.0\.txt_attn\.qkv\.bias.*complete"):
        load_transformer_file(tmp_path / "partial.safetensors")
    tensors = load_file(dev_files["bfl-fp32"])
    tensors["double_blocks.0.img_mlp.2.weight"] = tensors["double_blocks.0.img_mlp.2.weight"][
        :, :128
    ].contiguous()
    save_file(tensors, tmp_path / "wrong.safetensors", metadata=file.metadata)
    with pytest.raises(
        FormatError, match=r"img_mlp\.2\.weight gives .*ff\.net\.2\.weight the shape \(64, 128\).*\(64, 256\)"
    ):
        load_transformer_file(tmp_path / "wrong.safetensors")
    with pytest.raises(q.QuantizationError, match="unknown quantization"):
        load_transformer_file(dev_files["bfl-fp32"], "int3")
    with pytest.raises(FormatError, match="unknown dtype"):
        load_transformer_file(dev_files["bfl-fp32"], q.NONE, "fp64")


@pytest.mark.parametrize("name", ["e4m3fn", "Q8_0"])
def test_a_lora_branches_onto_fp8_and_gguf_layers(dev_files, tmp_path, name):
    """nodes.flux.lora keeps 8-bit and GGUF weights as they are and adds an unmerged branch; the
    result is as close to the same LoRA merged into the bf16 model as the file is to bf16."""
    from nodes.flux.lora import apply_loras
    from nodes.flux.lora_writers import random_lora, write_peft

    bf16 = torch.bfloat16
    plain = load_transformer_file(dev_files["bfl-bf16"], q.NONE, bf16)
    lora = write_peft(tmp_path / "lora.safetensors", random_lora(plain, std=0.5))
    model = load_transformer_file(dev_files[name], q.NONE, bf16)
    before = forward(model, bf16)
    report = apply_loras(model, [(lora, 1.0)], bf16)
    assert report.merged == 0 and report.branched > 10
    assert apply_loras(plain, [(lora, 1.0)], bf16).branched == 0  # merged into plain weights
    after, expected = forward(model, bf16), forward(plain, bf16)
    # measured: 16 dB without the LoRA; with it, 43 dB (fp8) and 54 dB (Q8_0)
    assert psnr(expected, before) < 25  # the LoRA changes the output a lot...
    assert psnr(expected, after) > 38  # ...and the branched one matches the merged one
