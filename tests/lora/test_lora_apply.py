"""Applying FLUX LoRAs to a FluxTransformer2DModel: exact merges into plain Linear weights, an
unmerged branch on bitsandbytes int8/nf4, torchao int8 and GGUF Q8_0 layers, stacking, strength
0, the same model from every layout, and the same outputs as diffusers' own LoRA loading."""

from __future__ import annotations

import pytest
import torch

from nodes.flux import lora_writers as w
from nodes.flux.lora import LoraLinear, apply_loras
from nodes.flux.lora_formats import LoraError, LoraPiece
from tests.lora.conftest import ATTENTION, BACKENDS, all_linears, make_lora, quantize, run

TO_Q = "transformer_blocks.0.attn.to_q"
SINGLE_TO_K = "single_transformer_blocks.0.attn.to_k"  # inside BFL's fused linear1 / single qkv

LAYOUTS = {
    "kohya": (w.write_kohya, {}),
    "kohya-diffusers-names": (w.write_kohya_diffusers, {}),
    "peft-metadata-alpha": (w.write_peft, {}),
    "peft-alpha-keys": (w.write_peft, {"alpha": "keys"}),
    "peft-unprefixed": (w.write_peft, {"prefix": ""}),
    "xlabs": (w.write_xlabs, {}),
}


def write(layout: str, path, lora):
    writer, options = LAYOUTS[layout]
    return writer(path, lora, **options)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def merged(weight: torch.Tensor, *terms: tuple[float, LoraPiece]) -> torch.Tensor:
    """The documented merge: (W in fp32 + sum of strength x scale x up @ down), cast back once."""
    delta = sum(strength * piece.scale * (piece.up.float() @ piece.down.float()) for strength, piece in terms)
    return (weight.float() + delta).to(weight.dtype)


# --- plain Linear layers: merged ----------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_rank1_lora_changes_the_weight_by_strength_times_up_down(layout, base_transformer, fresh, tmp_path):
    """rank 1, alpha 0.5 (scale 0.5), strength 0.75: W' = W + 0.375 * up @ down, as the documented
    fp32 merge gives it bit for bit (torch.equal); W' - W equals the delta to within one fp32
    rounding of W' (2^-23 relative); every other weight is untouched (torch.equal)."""
    lora = make_lora(base_transformer, [TO_Q, SINGLE_TO_K], rank=1, scale=0.5)
    path = write(layout, tmp_path / f"{layout}.safetensors", lora)
    model = fresh()
    before = weights(model)
    report = apply_loras(model, [(path, 0.75)], torch.float32)
    assert (report.merged, report.branched) == (2, 0)
    after = weights(model)
    for name in (TO_Q, SINGLE_TO_K):
        key = f"{name}.weight"
        assert torch.equal(after[key], merged(before[key], (0.75, lora[name])))
        expected = 0.375 * (lora[name].up @ lora[name].down)
        assert expected.abs().max() > 0.01
        bound = 2**-23 * after[key].abs().max().item()
        assert (after[key] - before[key] - expected).abs().max().item() <= bound
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert sorted(changed) == [f"{SINGLE_TO_K}.weight", f"{TO_Q}.weight"]


def test_bf16_weights_are_merged_in_fp32_and_rounded_once(base_transformer, fresh, tmp_path):
    lora = make_lora(base_transformer, [TO_Q], rank=2, scale=0.5)
    path = w.write_kohya(tmp_path / "k.safetensors", lora)
    model = fresh(torch.bfloat16)
    before = model.get_submodule(TO_Q).weight.clone()
    apply_loras(model, [(path, 1.3)], torch.bfloat16)
    assert torch.equal(model.get_submodule(TO_Q).weight, merged(before, (1.3, lora[TO_Q])))


def test_two_stacked_loras_add(base_transformer, fresh, tmp_path):
    a = make_lora(base_transformer, [TO_Q, SINGLE_TO_K], rank=2, scale=0.5, seed=1)
    b = make_lora(base_transformer, [TO_Q], rank=1, scale=1.0, seed=2)
    path_a = w.write_kohya(tmp_path / "a.safetensors", a)
    path_b = w.write_peft(tmp_path / "b.safetensors", b)
    model = fresh()
    before = weights(model)
    apply_loras(model, [(path_a, 0.5), (path_b, -1.0)], torch.float32)
    q = model.get_submodule(TO_Q).weight
    assert torch.equal(q, merged(before[f"{TO_Q}.weight"], (0.5, a[TO_Q]), (-1.0, b[TO_Q])))
    k = model.get_submodule(SINGLE_TO_K).weight
    assert torch.equal(k, merged(before[f"{SINGLE_TO_K}.weight"], (0.5, a[SINGLE_TO_K])))
    # Applied one after the other (two roundings instead of one): the same to fp32 precision.
    one_by_one = fresh()
    apply_loras(one_by_one, [(path_a, 0.5)], torch.float32)
    apply_loras(one_by_one, [(path_b, -1.0)], torch.float32)
    torch.testing.assert_close(one_by_one.get_submodule(TO_Q).weight, q, atol=1e-6, rtol=0)


def test_every_layout_gives_the_same_model(base_transformer, fresh, tmp_path, inputs):
    lora = make_lora(base_transformer, ATTENTION, rank=2, scale=0.5)
    models = {}
    for layout in LAYOUTS:
        models[layout] = fresh()
        apply_loras(
            models[layout], [(write(layout, tmp_path / f"{layout}.safetensors", lora), 0.8)], torch.float32
        )
    reference = weights(models["peft-metadata-alpha"])
    for layout, model in models.items():
        assert all(torch.equal(reference[k], v) for k, v in weights(model).items()), layout
    assert not torch.equal(run(models["kohya"], inputs), run(base_transformer, inputs))


# --- the same as diffusers' own loading ---------------------------------------------------

# Layers each layout carries in this comparison. kohya: not a single block's linear1 (diffusers'
# converter reads only FLUX.1's width there; tested against it at full width in test_lora_formats)
# nor the embedders (diffusers' pipeline drops those kohya keys; we apply them).
PARITY = {
    "kohya": lambda names: [
        n
        for n in names
        if n.startswith("transformer_blocks.") or n.endswith((".0.proj_out", ".0.norm.linear"))
    ],
    "peft-metadata-alpha": lambda names: names,
    "peft-alpha-keys": lambda names: names,
    "xlabs": lambda names: ATTENTION,
    "kohya-diffusers-names": lambda names: ATTENTION,
}


@pytest.mark.parametrize("layout", PARITY)
def test_outputs_equal_diffusers_load_lora_weights(
    layout, base_transformer, fresh, tmp_path, inputs, monkeypatch
):
    """Our merged model vs FluxPipeline.load_lora_weights + set_adapters(strength) (PEFT's
    unmerged layers) on the same weights: the same output to 1e-5 (fp32; measured <= 7e-7)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = PARITY[layout](all_linears(base_transformer))
    lora = make_lora(base_transformer, names, rank=2, scale=0.5, magnitude=0.1)
    path = write(layout, tmp_path / f"{layout}.safetensors", lora)
    ours = fresh()
    apply_loras(ours, [(path, 0.8)], torch.float32)
    parts = dict.fromkeys(("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), transformer=fresh(), **parts)
    pipe.load_lora_weights(str(path), adapter_name="lora")
    pipe.set_adapters(["lora"], [0.8])
    theirs = run(pipe.transformer, inputs)
    assert not torch.equal(theirs, run(base_transformer, inputs))
    torch.testing.assert_close(run(ours, inputs), theirs, atol=1e-5, rtol=1e-5)


# --- quantized layers: an unmerged branch -------------------------------------------------

# Relative error of the LoRA's effect on the output, ||(q+lora - q) - (plain+lora - plain)|| /
# ||plain+lora - plain||, measured on this model (fp32 / bf16 compute): int8 bitsandbytes 0.004 /
# 0.081, torchao int8 0.004 / 0.087, GGUF Q8_0 0.004 / 0.079, nf4 0.098 / 0.148 (nf4's own error
# on this tiny random model is 14% of the output; bf16 rounds the outputs the effect is read from).
EFFECT_BOUND = {
    ("int8 bitsandbytes", torch.float32): 0.02,
    ("nf4 bitsandbytes", torch.float32): 0.25,
    ("int8 torchao", torch.float32): 0.02,
    ("gguf Q8_0", torch.float32): 0.02,
    ("int8 bitsandbytes", torch.bfloat16): 0.15,
    ("nf4 bitsandbytes", torch.bfloat16): 0.3,
    ("int8 torchao", torch.bfloat16): 0.15,
    ("gguf Q8_0", torch.bfloat16): 0.15,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_lora_on_a_quantized_model_has_the_plain_models_effect(
    backend, dtype, base_transformer, fresh, tmp_path, inputs
):
    lora = make_lora(base_transformer, all_linears(base_transformer), rank=4, scale=0.5, magnitude=0.25)
    path = w.write_peft(tmp_path / "l.safetensors", lora)
    plain = fresh(dtype)
    without = run(plain, inputs, dtype)
    apply_loras(plain, [(path, 0.8)], dtype)
    want = run(plain, inputs, dtype) - without
    model = quantize(fresh(dtype), backend, dtype)
    kinds = {n: type(m) for n, m in model.named_modules() if n in lora}
    before = run(model, inputs, dtype)
    report = apply_loras(model, [(path, 0.8)], dtype)
    assert (report.merged, report.branched) == (0, len(lora))
    got = run(model, inputs, dtype) - before
    error = ((got - want).norm() / want.norm()).item()
    assert error < EFFECT_BOUND[backend, dtype], error
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.98
    # The quantized layers are kept as they were, inside the branch; the branch tensors are
    # buffers, so they move with the model.
    assert all(type(model.get_submodule(n).base) is kind for n, kind in kinds.items())
    assert {n for n, _ in model.named_buffers() if n.endswith("lora_down")} == {
        f"{n}.lora_down" for n in lora
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_branch_adds_exactly_the_lora_to_a_quantized_layer(backend, base_transformer, fresh, tmp_path):
    """Layer by layer the branch is exact: layer(x) - base(x) = strength x scale x up(down(x))
    (fp32, to 1e-5)."""
    lora = make_lora(base_transformer, [TO_Q], rank=3, scale=0.5)
    model = quantize(fresh(), backend, torch.float32)
    apply_loras(model, [(w.write_kohya(tmp_path / "k.safetensors", lora), 0.6)], torch.float32)
    layer = model.get_submodule(TO_Q)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = layer(x) - layer.base(x)
    want = 0.6 * 0.5 * (x @ lora[TO_Q].down.T @ lora[TO_Q].up.T)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_loras_applied_in_two_calls_share_one_branch(base_transformer, fresh, tmp_path, inputs):
    a = w.write_peft(tmp_path / "a.safetensors", make_lora(base_transformer, ATTENTION, rank=2, seed=1))
    b = w.write_kohya(tmp_path / "b.safetensors", make_lora(base_transformer, ATTENTION, rank=1, seed=2))
    together = quantize(fresh(), "int8 torchao", torch.float32)
    apply_loras(together, [(a, 0.7), (b, 0.4)], torch.float32)
    apart = quantize(fresh(), "int8 torchao", torch.float32)
    apply_loras(apart, [(a, 0.7)], torch.float32)
    apply_loras(apart, [(b, 0.4)], torch.float32)
    assert isinstance(apart.get_submodule(TO_Q), LoraLinear) and isinstance(
        apart.get_submodule(TO_Q).base, torch.nn.Linear
    )
    torch.testing.assert_close(run(apart, inputs), run(together, inputs), atol=1e-6, rtol=0)


class CastAtComputeLinear(torch.nn.Module):
    """The contract of fp8 Linears (nodes/flux/formats/fp8.py's Fp8Linear, on another branch):
    not an nn.Linear, in/out features, an fp8 weight buffer cast per call."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.register_buffer("weight", linear.weight.detach().to(torch.float8_e4m3fn))
        self.bias = linear.bias

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), self.bias)


def test_any_layer_with_in_and_out_features_gets_a_branch(base_transformer, fresh, tmp_path):
    lora = make_lora(base_transformer, [TO_Q], rank=2, scale=0.5)
    model = fresh()
    attn = model.get_submodule("transformer_blocks.0.attn")
    attn.to_q = CastAtComputeLinear(attn.to_q)
    report = apply_loras(model, [(w.write_peft(tmp_path / "p.safetensors", lora), 1.0)], torch.float32)
    assert (report.merged, report.branched) == (0, 1)
    layer = model.get_submodule(TO_Q)
    assert layer.weight.dtype == torch.float8_e4m3fn  # the base layer's weight, still fp8
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(layer(x) - layer.base(x), 0.5 * x @ lora[TO_Q].down.T @ lora[TO_Q].up.T)


# --- strength 0, and nothing changes on a bad file ----------------------------------------


@pytest.mark.parametrize("backend", ["plain", "int8 bitsandbytes", "gguf Q8_0"])
def test_strength_zero_gives_exactly_the_unmodified_outputs(
    backend, base_transformer, fresh, tmp_path, inputs
):
    lora = make_lora(base_transformer, all_linears(base_transformer), rank=2)
    path = w.write_kohya(tmp_path / "k.safetensors", lora)

    def build():  # (a GGUF model cannot be deep-copied: its parameters lose their quant type)
        return fresh() if backend == "plain" else quantize(fresh(), backend, torch.float32)

    model, reference = build(), build()
    report = apply_loras(model, [(path, 0.0)], torch.float32)
    assert (report.merged, report.branched) == (0, 0)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    assert torch.equal(run(model, inputs), run(reference, inputs))


def test_a_bad_file_in_the_list_changes_nothing(base_transformer, fresh, tmp_path):
    good = w.write_peft(tmp_path / "good.safetensors", make_lora(base_transformer, ATTENTION))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    model = fresh()
    before = weights(model)
    with pytest.raises(LoraError, match="bad.safetensors"):
        apply_loras(model, [(good, 1.0), (bad, 1.0)], torch.float32)
    assert all(torch.equal(before[k], v) for k, v in weights(model).items())
