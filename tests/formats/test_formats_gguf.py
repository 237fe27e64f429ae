"""GGUF transformers (Q8_0, Q4_0, Q4_K): written with the gguf package, loaded into diffusers'
GGUFLinear layers that keep the blocks quantized in memory, run on the CPU, and sample latents
close to bf16. Their size in memory (what the model manager counts) is their quantized size.

Measured here (64x64, PSNR of the sampled latents against the same weights in bf16): tiny model
(hidden 64, 4 steps) Q8_0 63 dB, Q4_0 43 dB; hidden-256 model (every Linear but x_embedder
quantized, 2 steps) Q4_K 47 dB. For scale: bf16 against fp32 is 51 dB."""

from __future__ import annotations

import copy

import gguf
import numpy as np
import pytest
import torch

from nodes.flux import quantization as q
from nodes.flux.formats import FormatError, estimate_file_bytes, load_transformer_file, writers
from nodes.flux.formats.gguf_transformer import GGUFFile, dequantize
from server.models import module_bytes
from tests.formats.helpers import linears_of, psnr, sampled

BF16 = torch.bfloat16
PSNR_BOUND = {"Q8_0": 56.0, "Q4_0": 37.0, "Q4_K": 40.0}


def gguf_linear_class():
    from diffusers.quantizers.gguf.utils import GGUFLinear

    return GGUFLinear


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A FLUX transformer 256 wide (2 heads of 128, FLUX.1's RoPE axes), whose Linear layers
    but x_embedder (64 in) have whole 256-value K-quant blocks, and its Q4_K file."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(3)
    model = FluxTransformer2DModel(
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=128,
        num_attention_heads=2,
        joint_attention_dim=256,
        pooled_projection_dim=256,
        guidance_embeds=True,
    ).eval()
    path = writers.write_gguf_transformer(model, tmp_path_factory.mktemp("wide") / "wide-Q4_K.gguf", "Q4_K")
    return model, path


def test_q4_k_blocks_decode_as_ggml_and_diffusers_decode_them():
    values = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32) * 0.05
    blocks = writers.quantize_q4_k(values)
    assert blocks.shape == (4, 2 * 144) and blocks.dtype == np.uint8
    by_gguf = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K)
    from diffusers.quantizers.gguf.utils import GGUFParameter

    by_diffusers = dequantize(
        GGUFParameter(torch.from_numpy(blocks), quant_type=gguf.GGMLQuantizationType.Q4_K)
    )
    assert np.abs(by_gguf - by_diffusers.float().numpy()).max() < 1e-3  # diffusers decodes in fp16
    q4_0 = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q4_0)
    q4_0_error = np.abs(gguf.quants.dequantize(q4_0, gguf.GGMLQuantizationType.Q4_0) - values).mean()
    assert np.abs(by_gguf - values).mean() < q4_0_error  # sub-block scales and mins beat Q4_0


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_tiny_gguf_stays_quantized_and_samples_close_to_bf16(dev_files, qtype):
    path = dev_files[qtype]
    model = load_transformer_file(path, q.NONE, BF16, "cpu")
    layers = [m for m in model.modules() if isinstance(m, gguf_linear_class())]
    file = GGUFFile(path)
    quantized = [k for k in file.keys() if file.stored_dtype(k) == qtype]
    assert len(quantized) > 20 and len(layers) >= len(quantized)
    assert all(m.weight.quant_type.name == qtype and m.weight.dtype == torch.uint8 for m in layers)
    assert module_bytes(model) == estimate_file_bytes(path, q.NONE, BF16)
    bf16 = load_transformer_file(dev_files["bfl-bf16"], q.NONE, BF16)
    assert module_bytes(model) < 0.6 * module_bytes(bf16)
    assert psnr(sampled(bf16, BF16), sampled(model, BF16)) > PSNR_BOUND[qtype]


def test_k_quant_gguf_stays_quantized_and_samples_close_to_bf16(wide):
    model, path = wide
    loaded = load_transformer_file(path, q.NONE, BF16)
    assert loaded.config.axes_dims_rope == [16, 56, 56]  # FLUX.1's, since heads are 128 wide
    layers = linears_of(loaded, gguf_linear_class())
    plain = linears_of(loaded, torch.nn.Linear)
    assert set(plain) - set(layers) == {"x_embedder"}  # 64 in-features: kept F16, as GGUF files do
    assert module_bytes(loaded) == estimate_file_bytes(path, q.NONE, BF16)
    bf16_bytes = sum(p.numel() * 2 for p in model.parameters())
    assert module_bytes(loaded) < 0.35 * bf16_bytes  # 4.5 bits per weight
    reference_bf16 = copy.deepcopy(model).to(BF16)
    expected = sampled(reference_bf16, BF16, steps=2)
    assert psnr(expected, sampled(loaded, BF16, steps=2)) > PSNR_BOUND["Q4_K"]


def test_a_quantization_choice_applies_to_the_layers_gguf_keeps_in_float(dev_files):
    model = load_transformer_file(dev_files["Q8_0"], q.INT8_TORCHAO, torch.float32)
    assert linears_of(model, gguf_linear_class())
    assert not [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]


def test_gguf_never_lets_diffusers_fetch_kernels_from_the_hub(dev_files, monkeypatch):
    monkeypatch.setenv("DIFFUSERS_GGUF_CUDA_KERNELS", "true")
    with pytest.raises(FormatError, match="never downloads"):
        load_transformer_file(dev_files["Q8_0"], q.NONE, BF16)


def test_a_damaged_gguf_file_is_named(dev_files, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(dev_files["Q8_0"].read_bytes()[:5000])
    with pytest.raises(FormatError, match="broken.gguf"):
        load_transformer_file(broken, q.NONE, BF16)
