"""Reading FLUX LoRAs: every layout gives the same pieces (diffusers module name → down, up,
scale), fused BFL projections split as diffusers splits them, and files that are not FLUX LoRAs,
or not for this model, fail with a message naming the file and the problem."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from nodes.flux import lora_writers as w
from nodes.flux.lora import apply_loras, lora_fingerprint
from nodes.flux.lora_formats import LoraError, LoraPiece, convert, read_lora
from tests.lora.conftest import ATTENTION, all_linears, make_lora

LAYOUTS = {
    # name: (writer, its options, the layers it can hold: None = every Linear)
    "kohya": (w.write_kohya, {}, None),
    "kohya-diffusers-names": (w.write_kohya_diffusers, {}, ATTENTION),
    "peft-metadata-alpha": (w.write_peft, {}, None),
    "peft-alpha-keys": (w.write_peft, {"alpha": "keys"}, None),
    "peft-unprefixed": (w.write_peft, {"prefix": ""}, None),
    "xlabs": (w.write_xlabs, {}, ATTENTION),
    "xlabs-diffusion_model": (w.write_xlabs, {"prefix": "diffusion_model."}, ATTENTION),
}


def deltas(pieces: dict[str, LoraPiece]) -> dict[str, torch.Tensor]:
    return {name: p.delta() for name, p in pieces.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_back_the_same_deltas(layout, base_transformer, tmp_path):
    writer, options, names = LAYOUTS[layout]
    lora = make_lora(base_transformer, names or all_linears(base_transformer), rank=2, scale=0.5)
    read = read_lora(writer(tmp_path / "lora.safetensors", lora, **options))
    assert set(read.layers) == set(lora)
    got, want = deltas(read.layers), deltas(lora)
    # Exact: the entries are multiples of 1/64 and the scale a power of two.
    assert all(torch.equal(got[n], want[n]) for n in want), [
        n for n in want if not torch.equal(got[n], want[n])
    ]


def test_layout_names(base_transformer, tmp_path):
    lora = make_lora(base_transformer, ATTENTION)
    assert read_lora(w.write_kohya(tmp_path / "k.safetensors", lora)).layout == "kohya"
    assert read_lora(w.write_peft(tmp_path / "p.safetensors", lora)).layout == "peft"
    assert read_lora(w.write_xlabs(tmp_path / "x.safetensors", lora)).layout == "xlabs"


def test_fused_qkv_with_one_shared_down_splits_row_wise(tmp_path):
    """A kohya LoRA trained on BFL's fused layers (rank 1: one down for q, k, v together) gives
    each of diffusers' split layers its rows of the fused delta: double-block qkv (diffusers'
    converter) and single-block linear1 (q|k|v|mlp, ours)."""
    g = torch.Generator().manual_seed(3)
    qkv_down, qkv_up = torch.randn(1, 64, generator=g), torch.randn(192, 1, generator=g)
    l1_down, l1_up = torch.randn(1, 64, generator=g), torch.randn(448, 1, generator=g)
    raw = {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": qkv_down,
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": qkv_up,
        "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(0.5),
        "lora_unet_single_blocks_0_linear1.lora_down.weight": l1_down,
        "lora_unet_single_blocks_0_linear1.lora_up.weight": l1_up,
        "lora_unet_single_blocks_0_linear1.alpha": torch.tensor(0.5),
    }
    layout, pieces, _ = convert(raw, {})
    assert layout == "kohya"
    fused = {
        "transformer_blocks.0.attn": qkv_up @ qkv_down * 0.5,
        "single_transformer_blocks.0": l1_up @ l1_down * 0.5,
    }
    rows = {"to_q": slice(0, 64), "to_k": slice(64, 128), "to_v": slice(128, 192)}
    for part, r in rows.items():
        assert torch.equal(
            pieces[f"transformer_blocks.0.attn.{part}"].delta(), fused["transformer_blocks.0.attn"][r]
        )
        assert torch.equal(
            pieces[f"single_transformer_blocks.0.attn.{part}"].delta(),
            fused["single_transformer_blocks.0"][r],
        )
    assert torch.equal(
        pieces["single_transformer_blocks.0.proj_mlp"].delta(), fused["single_transformer_blocks.0"][192:]
    )


@pytest.mark.parametrize("sparse", [False, True], ids=["shared-down", "block-diagonal"])
def test_linear1_split_equals_diffusers_at_full_width(sparse):
    """FLUX.1's real single block (width 3072, MLP 12288): our linear1 split equals diffusers'
    converter's (which only reads that width) piece for piece, in its shared-down and its
    block-diagonal ("sparse") cases."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    g = torch.Generator().manual_seed(4)
    rank, dims = 4, [3072, 3072, 3072, 12288]
    down = torch.randn(rank, 3072, generator=g)
    if sparse:
        up = torch.block_diag(*[torch.randn(d, 1, generator=g) for d in dims])
    else:
        up = torch.randn(sum(dims), rank, generator=g)
    raw = {
        "lora_unet_single_blocks_0_linear1.lora_down.weight": down,
        "lora_unet_single_blocks_0_linear1.lora_up.weight": up,
        "lora_unet_single_blocks_0_linear1.alpha": torch.tensor(2.0),  # scale 0.5
    }
    theirs = _convert_kohya_flux_lora_to_diffusers(dict(raw))
    _, ours, _ = convert(dict(raw), {})
    assert len(ours) == 4
    for name, piece in ours.items():
        # diffusers folds the scale (a power of two here) into the down weight
        assert torch.equal(theirs[f"transformer.{name}.lora_A.weight"], piece.down * piece.scale), name
        assert torch.equal(theirs[f"transformer.{name}.lora_B.weight"], piece.up), name
        assert piece.rank == (1 if sparse else 4)


def test_final_layer_equals_diffusers_and_keeps_its_alpha():
    """kohya's final layer: the same pieces as diffusers' converter (adaLN's shift/scale halves
    swapped) when alpha = rank; with another alpha, kohya's scale alpha/rank applies (diffusers'
    converter drops that alpha)."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    g = torch.Generator().manual_seed(5)
    raw = {
        "lora_unet_final_layer_adaLN_modulation_1.lora_down.weight": torch.randn(2, 64, generator=g),
        "lora_unet_final_layer_adaLN_modulation_1.lora_up.weight": torch.randn(128, 2, generator=g),
        "lora_unet_final_layer_linear.lora_down.weight": torch.randn(2, 64, generator=g),
        "lora_unet_final_layer_linear.lora_up.weight": torch.randn(64, 2, generator=g),
    }
    theirs = _convert_kohya_flux_lora_to_diffusers(dict(raw))
    _, ours, _ = convert(dict(raw), {})
    for name in ("norm_out.linear", "proj_out"):
        assert torch.equal(theirs[f"{name}.lora_A.weight"], ours[name].down)
        assert torch.equal(theirs[f"{name}.lora_B.weight"], ours[name].up)
        assert ours[name].scale == 1.0
    _, scaled, _ = convert({**raw, "lora_unet_final_layer_linear.alpha": torch.tensor(1.0)}, {})
    assert scaled["proj_out"].scale == 0.5


def test_comfyui_spellings_of_bfl_names(tmp_path):
    """BFL module names as ComfyUI writes them (`diffusion_model.` prefix), with kohya's
    lora_down/lora_up or PEFT's lora_A/lora_B suffixes."""
    g = torch.Generator().manual_seed(6)
    down, up = torch.randn(2, 64, generator=g), torch.randn(64, 2, generator=g)
    l1_down, l1_up = torch.randn(2, 64, generator=g), torch.randn(448, 2, generator=g)
    for a, b in (("lora_down", "lora_up"), ("lora_A", "lora_B")):
        raw = {
            f"diffusion_model.double_blocks.0.img_attn.proj.{a}.weight": down,
            f"diffusion_model.double_blocks.0.img_attn.proj.{b}.weight": up,
            f"diffusion_model.single_blocks.0.linear1.{a}.weight": l1_down,
            f"diffusion_model.single_blocks.0.linear1.{b}.weight": l1_up,
        }
        layout, pieces, _ = convert(raw, {})
        assert layout == "kohya"
        assert torch.equal(pieces["transformer_blocks.0.attn.to_out.0"].delta(), up @ down)
        assert torch.equal(pieces["single_transformer_blocks.0.proj_mlp"].delta(), (l1_up @ l1_down)[192:])


def test_kohya_text_encoder_keys_are_set_aside(base_transformer, tmp_path):
    lora = make_lora(base_transformer, ATTENTION)
    path = w.write_kohya(tmp_path / "k.safetensors", lora)
    from safetensors.torch import load_file

    raw = load_file(str(path))
    raw["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.ones(1, 64)
    raw["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.ones(64, 1)
    save_file(raw, str(path))
    read = read_lora(path)
    assert set(read.layers) == set(lora)
    assert read.ignored and all(k.startswith("text_encoder.") for k in read.ignored)


def test_a_peft_alpha_pattern_scales_its_own_modules(base_transformer, tmp_path):
    """diffusers' saved LoraConfig: modules with another alpha (alpha_pattern) or rank
    (rank_pattern) keep their own scale."""
    lora = make_lora(base_transformer, ATTENTION[:3], rank=2, scale=0.5)
    to_k = make_lora(base_transformer, [ATTENTION[1]], rank=4, seed=1)[ATTENTION[1]]
    lora[ATTENTION[1]] = LoraPiece(to_k.down, to_k.up, 0.25)
    read = read_lora(w.write_peft(tmp_path / "p.safetensors", lora))
    assert {n: p.scale for n, p in read.layers.items()} == {n: p.scale for n, p in lora.items()}


# --- what is not a FLUX LoRA, or not for this model ---------------------------------------


def test_a_model_checkpoint_is_not_a_lora(base_transformer, tmp_path):
    path = tmp_path / "flux-transformer.safetensors"
    save_file({k: v.contiguous() for k, v in list(base_transformer.state_dict().items())[:4]}, str(path))
    with pytest.raises(LoraError, match=r"flux-transformer.safetensors: it is not a LoRA file"):
        read_lora(path)


def test_an_sdxl_lora_is_not_a_flux_lora(tmp_path):
    path = tmp_path / "sdxl-style.safetensors"
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {f"{key}.lora_down.weight": torch.ones(4, 320), f"{key}.lora_up.weight": torch.ones(320, 4)},
        str(path),
    )
    with pytest.raises(LoraError, match=r"sdxl-style.safetensors: it is not a FLUX LoRA"):
        read_lora(path)


def test_a_flux_control_lora_is_refused_by_name(tmp_path):
    path = tmp_path / "canny.safetensors"
    save_file(
        {
            "double_blocks.0.img_attn.norm.query_norm.scale": torch.ones(128),
            "double_blocks.0.img_attn.qkv.lora_A.weight": torch.ones(4, 3072),
            "double_blocks.0.img_attn.qkv.lora_B.weight": torch.ones(9216, 4),
        },
        str(path),
    )
    with pytest.raises(LoraError, match=r"canny.safetensors: this is a FLUX Control LoRA"):
        read_lora(path)


def test_a_damaged_or_missing_file_is_named(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(b'\x40\x00\x00\x00\x00\x00\x00\x00{"a": ')
    with pytest.raises(LoraError, match=r"cut.safetensors.*not a complete safetensors file"):
        read_lora(path)
    with pytest.raises(LoraError, match=r"gone.safetensors does not exist"):
        read_lora(tmp_path / "gone.safetensors")


def test_a_lora_for_full_size_flux_names_the_first_layer_that_does_not_fit(fresh, tmp_path):
    """A real FLUX.1 LoRA (width 3072) on the tiny model: the message names the file and the
    first layer, and the model is left as it was."""
    g = torch.Generator().manual_seed(7)
    path = tmp_path / "flux1-dev-style.safetensors"
    save_file(
        {
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(4, 3072, generator=g),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(3072, 4, generator=g),
            "transformer.transformer_blocks.0.attn.to_k.lora_A.weight": torch.randn(4, 3072, generator=g),
            "transformer.transformer_blocks.0.attn.to_k.lora_B.weight": torch.randn(3072, 4, generator=g),
        },
        str(path),
    )
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = r"flux1-dev-style.safetensors .*does not fit this model: layer 'transformer_blocks.0.attn.to_q'"
    with pytest.raises(LoraError, match=message):
        apply_loras(model, [(path, 1.0)], torch.float32)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_lora_for_more_blocks_names_the_missing_layer(base_transformer, fresh, tmp_path):
    lora = make_lora(base_transformer, ATTENTION[:1])
    lora["transformer_blocks.5.attn.to_q"] = lora["transformer_blocks.0.attn.to_q"]
    path = w.write_peft(tmp_path / "deep.safetensors", lora)
    with pytest.raises(
        LoraError, match=r"deep.safetensors .*'transformer_blocks.5.attn.to_q', which this FLUX"
    ):
        apply_loras(fresh(), [(path, 1.0)], torch.float32)


def test_fingerprint_follows_the_file(base_transformer, tmp_path):
    path = w.write_peft(tmp_path / "l.safetensors", make_lora(base_transformer, ATTENTION[:2]))
    first = lora_fingerprint(path)
    assert lora_fingerprint(path) == first
    w.write_peft(path, make_lora(base_transformer, ATTENTION[:2], seed=9))  # same shapes, new values
    os.utime(path, ns=(1, 1))
    assert lora_fingerprint(path) != first
    w.write_peft(path, make_lora(base_transformer, ATTENTION[:3]))
    assert lora_fingerprint(path) != first


def test_a_lora_is_checked_against_a_model_config_without_the_model(base_transformer, tmp_path):
    """What a LoadLoRA node can check at once: the file against the transformer's config.json."""
    from nodes.flux.lora import check_lora_for_config

    config = dict(base_transformer.config)
    fits = w.write_kohya(tmp_path / "fits.safetensors", make_lora(base_transformer, ATTENTION))
    assert check_lora_for_config(fits, config).layout == "kohya"
    wider = dict(config, num_attention_heads=3)  # width 96
    with pytest.raises(LoraError, match=r"fits.safetensors .*does not fit this model"):
        check_lora_for_config(fits, wider)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_demo_lora_reads_back_in_every_layout(layout, base_transformer, tmp_path):
    lora = w.random_lora(base_transformer, rank=4, alpha=2.0, seed=0)
    assert len(lora) == len(ATTENTION)
    writer, options, _ = LAYOUTS[layout]
    read = read_lora(writer(tmp_path / "demo.safetensors", lora, dtype=torch.bfloat16, **options))
    want = {n: LoraPiece(p.down.bfloat16(), p.up.bfloat16(), p.scale).delta() for n, p in lora.items()}
    got = deltas(read.layers)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5)
