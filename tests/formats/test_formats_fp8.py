"""fp8 transformers (float8_e4m3fn, float8_e5m2, scaled fp8): they load on the CPU, stay 8-bit in
memory, compute each layer from its cast (and scaled) weight, and sample latents close to bf16.

Measured here (tiny dev model, 64x64, 4 steps; PSNR of the latents against the same weights as a
bf16 file): e4m3fn 51 dB, scaled e4m3fn 51 dB, e5m2 46 dB; scaled fp8 quantized to int8 51 dB.
For scale: the bf16 model against its fp32 weights is 51 dB."""

from __future__ import annotations

import pytest
import torch

from nodes.flux import quantization as q
from nodes.flux.formats import fp8_linear, is_fp8, load_transformer_file
from nodes.flux.formats.checkpoint_split import TensorFile
from nodes.flux.formats.fp8 import Fp8Linear
from server.models import module_bytes
from tests.formats.helpers import FP8, forward, linears_of, psnr, sampled

BF16 = torch.bfloat16
# Lower bounds on the latents' PSNR (dB) against bf16; the figures measured are a few dB above.
PSNR_BOUND = {"e4m3fn": 46.0, "scaled": 46.0, "e5m2": 41.0}


def test_fp8_linear_keeps_its_weight_8bit_and_computes_with_the_scaled_cast():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 32, generator=g).to(torch.float8_e4m3fn)
    scale, bias = torch.tensor(0.01), torch.randn(48, generator=g)
    layer = fp8_linear(weight, scale, bias, BF16)
    assert is_fp8(layer.weight.dtype) and not is_fp8(BF16)
    x = torch.randn(2, 5, 32, generator=g)
    for dtype in (BF16, torch.float32):
        expected = torch.nn.functional.linear(
            x.to(dtype), weight.to(dtype) * scale.to(dtype), bias.to(BF16).to(dtype)
        )
        assert torch.equal(layer(x.to(dtype)), expected)
    assert module_bytes(layer) == 48 * 32 + 48 * 2 + 4  # fp8 weight, bf16 bias, fp32 scale
    with pytest.raises(TypeError, match="float8"):
        fp8_linear(weight.to(BF16), None, None, BF16)


@pytest.fixture(scope="module")
def bf16_latents(dev_files):
    return sampled(load_transformer_file(dev_files["bfl-bf16"], q.NONE, BF16), BF16)


@pytest.mark.parametrize("name", ["e4m3fn", "e5m2", "scaled"])
def test_fp8_files_stay_8bit_and_sample_close_to_bf16(dev_files, bf16_latents, name):
    model = load_transformer_file(dev_files[name], q.NONE, "auto", "cpu")
    assert model.dtype == BF16  # "auto" computes fp8 files in bf16; model.dtype is not fp8
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    assert len(layers) == len(linears_of(load_transformer_file(dev_files["bfl-bf16"]), torch.nn.Linear))
    stored = FP8["e4m3fn" if name == "scaled" else name]
    assert all(m.weight.dtype == stored for m in layers)
    assert all((m.scale_weight is not None) == (name == "scaled") for m in layers)
    bf16_bytes = module_bytes(load_transformer_file(dev_files["bfl-bf16"], q.NONE, BF16))
    assert module_bytes(model) < 0.55 * bf16_bytes  # Linear weights are most of a FLUX transformer
    assert psnr(bf16_latents, sampled(model, BF16)) > PSNR_BOUND[name]


def test_scaled_fp8_applies_its_scales(dev_files):
    """Without the scales its weights would be up to 448 where the real ones are below 1."""
    model = load_transformer_file(dev_files["scaled"], q.NONE, BF16)
    layer = model.transformer_blocks[0].attn.to_q
    raw = layer.weight.to(torch.float32)
    real = raw * layer.scale_weight
    assert raw.abs().max() > 100 and real.abs().max() < 1
    ref = load_transformer_file(dev_files["bfl-bf16"], q.NONE, torch.float32)
    assert (real - ref.transformer_blocks[0].attn.to_q.weight).abs().max() < 0.01


def test_fp8_biases_and_norms_are_upcast(tiny_pipelines, tmp_path):
    """Some fp8 files store every tensor as fp8, norms and biases too."""
    from nodes.flux.formats import writers
    from tests.formats.helpers import reference

    ref = reference(tiny_pipelines["dev"])
    file = writers.write_bfl_transformer(
        ref, tmp_path / "all-fp8.safetensors", fp8=FP8["e4m3fn"], fp8_everything=True
    )
    model = load_transformer_file(file, q.NONE, BF16)
    assert model.transformer_blocks[0].attn.norm_q.weight.dtype == BF16
    assert model.transformer_blocks[0].attn.to_q.bias.dtype == BF16
    assert psnr(forward(ref, torch.float32), forward(model, BF16)) > 35


@pytest.mark.parametrize("choice", [q.INT8_TORCHAO, q.INT8_BNB])
def test_fp8_weights_with_a_quantization_choice_are_upcast_then_quantized(dev_files, bf16_latents, choice):
    model = load_transformer_file(dev_files["scaled"], choice, BF16)
    assert not any(isinstance(m, Fp8Linear) for m in model.modules())
    assert psnr(bf16_latents, sampled(model, BF16)) > 46


def test_comfyui_scale_input_keys_are_ignored(dev_files, tmp_path, caplog):
    """Scaled fp8 files made for fp8 matrix multiplication also carry `scale_input`s."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(dev_files["scaled"])
    for key in [k for k in tensors if k.endswith(".scale_weight")]:
        tensors[key.replace(".scale_weight", ".scale_input")] = torch.tensor(1.0)
    file = tmp_path / "with-inputs.safetensors"
    save_file(tensors, file, metadata=TensorFile(dev_files["scaled"]).metadata)
    model = load_transformer_file(file, q.NONE, BF16)
    reference = load_transformer_file(dev_files["scaled"], q.NONE, BF16)
    assert torch.equal(forward(model, BF16), forward(reference, BF16))
    assert "no place" not in caplog.text


def test_fp8_all_in_one_checkpoint_keeps_its_transformer_8bit(tiny_pipelines, tmp_path):
    """As ComfyUI's checkpoints/flux1-dev-fp8.safetensors: fp8 transformer, bf16 VAE."""
    from nodes.flux.formats import load_vae_file, writers
    from tests.formats.helpers import reference

    file = writers.write_all_in_one(
        tmp_path / "flux1-dev-fp8.safetensors",
        transformer=reference(tiny_pipelines["dev"]),
        vae=reference(tiny_pipelines["dev"], "VAE"),
        fp8=FP8["e4m3fn"],
    )
    model = load_transformer_file(file, q.NONE, "auto")
    assert model.dtype == BF16 and any(isinstance(m, Fp8Linear) for m in model.modules())
    assert load_vae_file(file, "auto").dtype == BF16
