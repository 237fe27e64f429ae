"""Single-file CLIP-L and T5 text encoders (ComfyUI's text_encoders/ files) load into the same
transformers modules as a diffusers folder, with the shipped tokenizers, every quantization
choice, fp16, fp8 and scaled fp8, streamed one layer at a time."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import pytest
import torch

from nodes.flux import assets
from nodes.flux import quantization as q
from nodes.flux.demo import build_tiny_flux
from nodes.flux.formats import text_encoders as te
from nodes.flux.sources import load_part
from tests.formats import encoder_files as ef

CPU = torch.device("cpu")
PROMPTS = ["a photo of a cat holding a sign that says hello world", "naïve café, 東京"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("te") / "tiny", seed=3)


@pytest.fixture(scope="module")
def files(pipeline, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text_encoders")
    t5 = ef.t5_state(pipeline)
    scaled = ef.to_scaled_fp8(t5)
    fp8 = ef.to_fp8(t5)
    all_in_one = {f"text_encoders.clip_l.transformer.{k}": v for k, v in ef.clip_l_state(pipeline).items()}
    all_in_one |= {f"text_encoders.t5xxl.transformer.{k}": v for k, v in t5.items()}
    two_t5 = {f"a.{k}": v for k, v in t5.items()} | {f"b.{k}": v for k, v in t5.items()}
    return {
        "clip_l": ef.write(ef.clip_l_state(pipeline), root / "clip_l.safetensors"),
        "t5": ef.write(t5, root / "t5xxl_fp32.safetensors"),
        "t5_fp16": ef.write(ef.cast(t5, torch.float16), root / "t5xxl_fp16.safetensors"),
        "t5_fp8": ef.write(fp8, root / "t5xxl_fp8_e4m3fn.safetensors"),
        "t5_fp8_ref": ef.write(ef.dequantized(fp8, torch.bfloat16), root / "fp8_dequantized.safetensors"),
        "t5_scaled": ef.write(scaled, root / "t5xxl_fp8_e4m3fn_scaled.safetensors"),
        "t5_scaled_ref": ef.write(
            ef.dequantized(scaled, torch.bfloat16), root / "scaled_dequantized.safetensors"
        ),
        "all_in_one": ef.write(all_in_one, root / "all_in_one.safetensors"),
        "two_t5": ef.write(two_t5, root / "two_t5.safetensors"),
    }


def encode(module, tokenizer, kind: str):
    length = assets.CLIP_MAX_LENGTH if kind == "CLIP" else 48
    ids = tokenizer(PROMPTS, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = module(ids.input_ids.to(module.device), output_hidden_states=False)
    return out.last_hidden_state, getattr(out, "pooler_output", None)


def assert_same_output(a, b):
    assert torch.equal(a[0], b[0])
    assert (a[1] is None) == (b[1] is None) and (a[1] is None or torch.equal(a[1], b[1]))


# --- shipped tokenizers and configs --------------------------------------------------------


def test_shipped_tokenizers_give_the_real_ids():
    clip, t5 = assets.clip_tokenizer(), assets.t5_tokenizer()
    assert len(clip) == 49408 and (clip.bos_token_id, clip.eos_token_id, clip.pad_token_id) == (
        49406,
        49407,
        49407,
    )
    assert clip("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(t5) == 32100 and (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert t5("Hello world").input_ids == [8774, 296, 1]
    assert t5("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert t5.convert_ids_to_tokens(32099) == "<extra_id_0>"


def test_shipped_configs_are_flux1s():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    with torch.device("meta"):
        dev = FluxTransformer2DModel.from_config(assets.config("flux1-dev/transformer"))
        schnell = FluxTransformer2DModel.from_config(assets.config("flux1-schnell/transformer"))
        vae = AutoencoderKL.from_config(assets.config("flux1-dev/vae"))
        clip = CLIPTextModel(CLIPTextConfig(**assets.config("clip-l")))
        t5 = T5EncoderModel(T5Config(**assets.config("t5-xxl")))
    assert round(count(dev) / 1e9, 2) == 11.90 and dev.config.guidance_embeds
    assert not schnell.config.guidance_embeds and count(schnell) < count(dev)
    assert round(count(vae) / 1e6, 1) == 83.8 and vae.config.latent_channels == 16
    assert round(count(clip) / 1e6, 1) == 123.1
    assert round(count(t5) / 1e9, 2) == 4.76
    folder = assets.config_dir("flux1-schnell")
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
        folder, subfolder="scheduler", local_files_only=True
    )
    assert (scheduler.config.shift, scheduler.config.use_dynamic_shifting) == (1.0, False)
    assert assets.config("flux1-dev/scheduler")["use_dynamic_shifting"] is True
    with pytest.raises(KeyError, match="known"):
        assets.config("sdxl")


# --- loading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "prefix"),
    [
        ("CLIP", "clip_l", None),
        ("T5", "t5", None),
        ("CLIP", "all_in_one", "text_encoders.clip_l.transformer."),
        ("T5", "all_in_one", "text_encoders.t5xxl.transformer."),
    ],
)
def test_single_file_equals_the_diffusers_folder(pipeline, files, kind, name, prefix):
    """The HF-layout file gives exactly the embeddings of the same encoder loaded from the
    diffusers folder, with the same (shipped) tokenizer."""
    reference = load_part(pipeline, kind, q.NONE, "auto", CPU)
    module, tokenizer = te.load_text_encoder_file(files[name], kind, q.NONE, "auto", CPU, prefix=prefix)
    assert type(module) is type(reference.module) and module.dtype == torch.float32
    assert not module.training
    assert_same_output(encode(module, tokenizer, kind), encode(reference.module, reference.tokenizer, kind))


def test_config_is_read_off_the_tensors(pipeline, files):
    module, _ = te.load_text_encoder_file(files["t5"], "T5")
    folder = load_part(pipeline, "T5", q.NONE, "auto", CPU).module.config
    for field in (
        "vocab_size",
        "d_model",
        "d_kv",
        "d_ff",
        "num_layers",
        "num_heads",
        "relative_attention_num_buckets",
    ):
        assert getattr(module.config, field) == getattr(folder, field), field
    assert module.config.vocab_size == 32128 and module.config.is_gated_act
    clip, _ = te.load_text_encoder_file(files["clip_l"], "CLIP")
    assert (clip.config.vocab_size, clip.config.num_attention_heads, clip.config.hidden_size) == (
        49408,
        1,
        64,
    )


@pytest.mark.parametrize("choice", [q.INT8_BNB, q.INT8_TORCHAO, q.NF4_BNB])
def test_t5_quantization_choices(pipeline, files, choice):
    """Every choice of quantization.py works on a single-file T5; int8 gives exactly what the
    folder loader (transformers' own quantizer) gives, and bitsandbytes leaves `wo` as
    transformers does."""
    module, tokenizer = te.load_text_encoder_file(files["t5"], "T5", choice, "auto", CPU)
    reference = load_part(pipeline, "T5", choice, "auto", CPU)
    ours, theirs = encode(module, tokenizer, "T5")[0], encode(reference.module, reference.tokenizer, "T5")[0]
    ff = module.encoder.block[0].layer[1].DenseReluDense
    folder_ff = reference.module.encoder.block[0].layer[1].DenseReluDense
    for name in ("wi_0", "wo"):  # the same layer and weight classes as transformers gives
        ours_layer, theirs_layer = getattr(ff, name), getattr(folder_ff, name)
        assert type(ours_layer) is type(theirs_layer), name
        assert type(ours_layer.weight) is type(theirs_layer.weight), name
    assert type(ff.wi_0) is not torch.nn.Linear or type(ff.wi_0.weight).__name__ != "Parameter"
    if choice == q.NF4_BNB:
        # fluxloom's nf4 layers use bitsandbytes' default double quantization of the absmax
        # statistics; transformers' default config does not: close, not equal.
        assert torch.allclose(ours, theirs, atol=0.1) and torch.isfinite(ours).all()
    else:
        assert torch.equal(ours, theirs)


def test_fp16_file_loads_as_transformers_would(pipeline, files, tmp_path):
    """auto keeps the stored fp16 on the CPU, T5's `wo` stays fp32 (transformers'
    _keep_in_fp32_modules), and the output equals a diffusers folder holding the same fp16
    weights, loaded in fp16."""
    module, tokenizer = te.load_text_encoder_file(files["t5_fp16"], "T5")
    ff = module.encoder.block[0].layer[1].DenseReluDense
    assert module.shared.weight.dtype == torch.float16 and ff.wi_0.weight.dtype == torch.float16
    assert ff.wo.weight.dtype == torch.float32
    folder = shutil.copytree(pipeline, tmp_path / "fp16-pipeline")
    ef.write(ef.t5_state_from(files["t5_fp16"]), folder / "text_encoder_2" / "model.safetensors")
    reference = load_part(folder, "T5", q.NONE, "fp16", CPU)
    assert torch.equal(
        encode(module, tokenizer, "T5")[0], encode(reference.module, reference.tokenizer, "T5")[0]
    )


@pytest.mark.parametrize("name", ["t5_fp8", "t5_scaled"])
def test_fp8_files_stay_8bit_and_mean_their_dequantized_weights(files, name):
    """With quantization none, fp8 Linear weights stay fp8 in memory (cast per layer at compute,
    scaled by scale_weight) and give exactly what a file of the dequantized weights gives."""
    module, tokenizer = te.load_text_encoder_file(files[name], "T5")
    attention = module.encoder.block[0].layer[0].SelfAttention
    assert attention.q.weight.dtype == torch.float8_e4m3fn
    if name == "t5_scaled":
        assert attention.q.scale_weight is not None
    assert module.shared.weight.dtype == torch.bfloat16  # auto: bf16 for an fp8 file on the CPU
    # T5 casts wo's input to wo's weight dtype, so wo is upcast rather than kept fp8.
    assert module.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16
    reference, _ = te.load_text_encoder_file(files[name + "_ref"], "T5")
    ours, theirs = encode(module, tokenizer, "T5")[0], encode(reference, tokenizer, "T5")[0]
    assert ours.dtype == torch.bfloat16 and torch.isfinite(ours).all()
    assert torch.equal(ours, theirs)
    int8, _ = te.load_text_encoder_file(files[name], "T5", q.INT8_TORCHAO)
    close = encode(int8, tokenizer, "T5")[0].float()
    assert torch.nn.functional.cosine_similarity(close.flatten(), theirs.float().flatten(), dim=0) > 0.99


def test_int8_streaming_holds_one_full_precision_layer_at_a_time(files, monkeypatch):
    """Each Linear weight read from the file is gone (quantized) before the next one is read."""
    read = te.EncoderFile.read
    linear_reads: list[weakref.ref] = []
    most_alive = 0

    def tracking_read(self, fh, key):
        nonlocal most_alive
        tensor = read(self, fh, key)
        if te._is_linear_key(key) and tensor.ndim == 2:
            most_alive = max(most_alive, sum(r() is not None for r in linear_reads))
            linear_reads.append(weakref.ref(tensor))
        return tensor

    monkeypatch.setattr(te.EncoderFile, "read", tracking_read)
    te.load_text_encoder_file(files["t5"], "T5", q.INT8_BNB)
    # 6 of each block's 7 Linears are read and quantized; `wo`, kept in full precision under
    # bitsandbytes (as transformers does), is memory-mapped instead of read.
    assert len(linear_reads) == 2 * 6 and most_alive == 0


def test_estimated_size_follows_the_choice(files):
    fp32 = te.estimate_text_encoder_bytes(files["t5"], "T5", q.NONE, torch.float32)
    int8 = te.estimate_text_encoder_bytes(files["t5"], "T5", q.INT8_BNB, torch.float32)
    fp8 = te.estimate_text_encoder_bytes(files["t5_fp8"], "T5", q.NONE, torch.bfloat16)
    assert fp32 == sum(t.numel() * 4 for t in ef.t5_state_from(files["t5"]).values())
    assert int8 < fp32 and fp8 < fp32 / 2


# --- bad input ------------------------------------------------------------------------------


def test_errors_name_the_file_and_the_problem(files, tmp_path):
    with pytest.raises(te.TextEncoderFileError, match="no key ending in 'encoder.block.0"):
        te.load_text_encoder_file(files["clip_l"], "T5")
    with pytest.raises(te.TextEncoderFileError, match="several T5 encoders.*'a.', 'b.'.*prefix="):
        te.load_text_encoder_file(files["two_t5"], "T5")
    module, _ = te.load_text_encoder_file(files["two_t5"], "T5", prefix="b.")
    assert module.config.num_layers == 2
    with pytest.raises(q.QuantizationError, match="CLIP is not quantized"):
        te.load_text_encoder_file(files["clip_l"], "CLIP", q.INT8_BNB)
    with pytest.raises(q.QuantizationError, match="unknown quantization"):
        te.load_text_encoder_file(files["t5"], "T5", "int3")
    with pytest.raises(te.TextEncoderFileError, match="unknown dtype"):
        te.load_text_encoder_file(files["t5"], "T5", dtype="fp64")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(files["t5"].read_bytes()[:-100])
    with pytest.raises(te.TextEncoderFileError, match="cut.safetensors is not a complete safetensors file"):
        te.load_text_encoder_file(cut, "T5")
    state = ef.t5_state_from(files["t5"])
    state.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight")
    with pytest.raises(
        te.TextEncoderFileError, match=r"no values for encoder.block.1.layer.1.DenseReluDense.wo"
    ):
        te.load_text_encoder_file(ef.write(state, tmp_path / "partial.safetensors"), "T5")
    small = {k: v[:1000] if k == "shared.weight" else v for k, v in ef.t5_state_from(files["t5"]).items()}
    with pytest.raises(te.TextEncoderFileError, match="1000 rows, fewer than the 32100 tokens"):
        te.load_text_encoder_file(ef.write(small, tmp_path / "small.safetensors"), "T5")
