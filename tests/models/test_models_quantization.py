"""Every quantization choice on this CPU: it loads and runs, or fails with a message that says
why and what works instead. bitsandbytes int8 T5 really holds int8 weights."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from nodes.flux import quantization as q
from nodes.flux.handles import ModelHandle
from nodes.flux.sources import check_loadable
from server.models import module_bytes
from tests.models.conftest import create_manager
from tests.models.quantize_reference import quantize_linears

CPU = torch.device("cpu")


def manager(models_dir):
    return create_manager(models_dir, vram_budget=2**30, ram_budget=2**30, device="cpu")


def handle(path, kind, quantization, dtype="fp32"):
    return ModelHandle(
        kind=kind, source="fluxloom-demo", path=str(path), quantization=quantization, dtype=dtype
    )


def encode_t5(lm, text="a cat holding a sign that says hello world"):
    ids = lm.tokenizer(text, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return lm.module(ids.input_ids).last_hidden_state


def run_transformer(lm, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = lm.module.config
    dt = lm.dtype
    with torch.no_grad():
        return lm.module(
            hidden_states=torch.randn(1, 16, 64, generator=g).to(dt),
            encoder_hidden_states=torch.randn(1, 8, cfg.joint_attention_dim, generator=g).to(dt),
            pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g).to(dt),
            timestep=torch.tensor([0.5], dtype=dt),
            guidance=torch.tensor([3.5], dtype=dt),
            txt_ids=torch.zeros(8, 3),
            img_ids=torch.zeros(16, 3),
            return_dict=False,
        )[0]


def quantized_part(module, kind):
    """What quantization shrinks: T5's blocks (its embedding, 32,128 real rows, is never
    quantized and dominates a tiny T5), the whole transformer."""
    return module.encoder.block if kind == "T5" else module


def test_int8_t5_through_bitsandbytes_runs_on_the_cpu_with_int8_weights(models_dir, demo_path):
    import bitsandbytes as bnb

    m = manager(models_dir)
    with m.use(handle(demo_path, "T5", q.NONE)) as ref:
        expected = encode_t5(ref)
        # The blocks: T5's embedding (32,128 real rows) is never quantized and dominates a tiny T5.
        full_bytes = module_bytes(ref.module.encoder.block)
    with m.use(handle(demo_path, "T5", q.INT8_BNB)) as lm:
        linears = [mod for mod in lm.module.modules() if isinstance(mod, bnb.nn.Linear8bitLt)]
        # q, k, v, o, wi_0, wi_1 in each of 2 blocks; transformers keeps T5's `wo` unquantized.
        assert len(linears) == 2 * 6
        assert all(mod.weight.dtype == torch.int8 for mod in linears)
        plain = [n for n, mod in lm.module.named_modules() if type(mod) is torch.nn.Linear]
        assert plain and all(n.endswith(".wo") for n in plain)
        got = encode_t5(lm)
        quant_bytes = module_bytes(lm.module.encoder.block)
    assert got.shape == expected.shape == (1, 32, 64) and torch.isfinite(got).all()
    cos = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
    assert cos > 0.99  # int8 stays close to the full-precision encoder
    assert quant_bytes < 0.6 * full_bytes


@pytest.mark.parametrize("choice", q.CHOICES)
@pytest.mark.parametrize("kind", ["T5", "FLUX_MODEL"])
def test_every_choice_runs_on_the_cpu(models_dir, demo_path, kind, choice):
    m = manager(models_dir)
    check_loadable(demo_path, kind, choice, CPU)
    with m.use(handle(demo_path, kind, choice)) as lm:
        out = encode_t5(lm) if kind == "T5" else run_transformer(lm)
        assert torch.isfinite(out).all()
        size = module_bytes(quantized_part(lm.module, kind))
    with m.use(handle(demo_path, kind, q.NONE)) as ref:
        full = module_bytes(quantized_part(ref.module, kind))
    if choice == q.NONE:
        assert size == full
    else:  # quantized weights are really smaller (measured, not get_memory_footprint)
        assert size < 0.7 * full


def test_bnb_transformer_on_the_cpu_says_how_it_was_quantized(models_dir, demo_path, caplog):
    import bitsandbytes as bnb

    with (
        caplog.at_level(logging.INFO, "fluxloom.models"),
        manager(models_dir).use(handle(demo_path, "FLUX_MODEL", q.INT8_BNB)) as lm,
    ):
        layers = [mod for mod in lm.module.modules() if isinstance(mod, bnb.nn.Linear8bitLt)]
        assert layers and all(layer.weight.dtype == torch.int8 for layer in layers)
    assert "Linear layers quantized by fluxloom" in caplog.text


def test_nf4_t5_with_odd_widths_fails_clearly_on_the_cpu(models_dir, demo_path):
    from transformers import T5Config, T5EncoderModel

    # A T5 whose layers have 48 in-features: bitsandbytes cannot pack nf4 for it on the CPU.
    odd = models_dir / "diffusers" / "odd-flux"
    shutil.copytree(demo_path, odd)
    config = T5Config.from_pretrained(odd / "text_encoder_2")
    config.d_model, config.d_kv, config.num_heads = 48, 24, 2
    shutil.rmtree(odd / "text_encoder_2")
    T5EncoderModel(config).save_pretrained(odd / "text_encoder_2")
    with pytest.raises(q.QuantizationError) as info:
        check_loadable(odd, "T5", q.NF4_BNB, CPU)
    message = str(info.value)
    assert "multiple of 64" in message and q.INT8_BNB in message and q.INT8_TORCHAO in message
    check_loadable(odd, "T5", q.INT8_BNB, CPU)  # the alternatives it names do pass


def test_unknown_and_misplaced_choices_say_what_works(models_dir, demo_path):
    with pytest.raises(q.QuantizationError, match="choose one of: int8 \\(bitsandbytes\\)"):
        check_loadable(demo_path, "T5", "int4 (magic)", CPU)
    with pytest.raises(q.QuantizationError, match="use quantization 'none'"):
        check_loadable(demo_path, "VAE", q.INT8_BNB, CPU)
    with pytest.raises(q.QuantizationError, match="pip install not_a_real_package_xyz"):
        q.require_package("not_a_real_package_xyz", q.INT8_BNB)


def test_cuda_uses_the_libraries_own_bitsandbytes_path():
    """On CUDA the transformer goes through diffusers' BitsAndBytesConfig, as the seed code does;
    on the CPU diffusers would stop with "No GPU found", so fluxloom quantizes the layers itself."""
    cuda = torch.device("cuda")
    config = q.diffusers_config(q.INT8_BNB, torch.bfloat16, cuda)
    assert type(config).__module__.startswith("diffusers") and config.load_in_8bit
    nf4 = q.diffusers_config(q.NF4_BNB, torch.bfloat16, cuda)
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4"
    assert q.diffusers_config(q.INT8_BNB, torch.float32, CPU) is None and q.streams_on(q.INT8_BNB, CPU)
    assert not q.streams_on(q.INT8_BNB, cuda)
    t5 = q.transformers_config(q.INT8_BNB, torch.bfloat16)
    assert type(t5).__module__.startswith("transformers") and t5.load_in_8bit


@pytest.mark.parametrize("choice", [q.INT8_BNB, q.NF4_BNB, q.INT8_TORCHAO])
def test_streamed_cpu_transformer_equals_loading_then_quantizing(demo_path, choice):
    """On the CPU fluxloom reads the transformer tensor by tensor and quantizes each Linear as it
    comes (so the full-precision model is never in memory at once); the result is the same model
    as loading it whole and quantizing afterwards (diffusers' TorchAoConfig for torchao)."""
    from diffusers import FluxTransformer2DModel, TorchAoConfig

    streamed, done, kept = q.load_streaming(
        FluxTransformer2DModel, demo_path / "transformer", choice, torch.float32, CPU
    )
    assert done == 30 and kept == 0
    if choice == q.INT8_TORCHAO:
        config = TorchAoConfig(q._torchao_int8())
        ref = FluxTransformer2DModel.from_pretrained(
            demo_path, subfolder="transformer", dtype=torch.float32, quantization_config=config
        )
    else:
        ref = FluxTransformer2DModel.from_pretrained(demo_path, subfolder="transformer", dtype=torch.float32)
        quantize_linears(ref, choice, torch.float32, CPU)
    ref.eval()

    class Wrap:
        def __init__(self, module):
            self.module, self.dtype = module, torch.float32

    assert torch.equal(run_transformer(Wrap(streamed)), run_transformer(Wrap(ref)))
    for m in streamed.modules():  # no Linear keeps a full-precision weight
        if isinstance(m, torch.nn.Linear):
            w = m.weight
            assert w.dtype in (torch.int8, torch.uint8) or type(w).__module__.startswith("torchao")
    assert not any(t.is_meta for t in streamed.parameters())
