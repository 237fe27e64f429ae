"""FLUX VAEs in BFL's layout (ae.safetensors, or the `vae.` part of an all-in-one checkpoint):
the config read from the tensors, the conversion equal to diffusers' own LDM converter, and the
same encode/decode, bit for bit, as the diffusers folder."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file, save_file

from nodes.flux.formats import FormatError, load_vae_file
from nodes.flux.formats.bfl_vae import GROUPS_METADATA, convert_vae_state_dict, to_bfl_vae
from tests.formats.helpers import reference

# FLUX.1-dev's vae/config.json (the published snapshot), less its version and class keys.
FLUX_VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 16,
    "layers_per_block": 2,
    "mid_block_add_attention": True,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}


def test_bfl_vae_file_gives_the_same_vae_as_the_diffusers_folder(tiny_pipelines, dev_files):
    ref = reference(tiny_pipelines["dev"], "VAE")
    g = torch.Generator().manual_seed(0)
    image, latents = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.randn(1, 16, 8, 8, generator=g)
    for name in ("vae", "all-in-one"):
        vae = load_vae_file(dev_files[name], "auto", "cpu")
        assert vae.config.scaling_factor == 0.3611 and vae.config.shift_factor == 0.1159
        assert {k: vae.config[k] for k in ("block_out_channels", "norm_num_groups", "layers_per_block")} == {
            k: ref.config[k] for k in ("block_out_channels", "norm_num_groups", "layers_per_block")
        }
        with torch.no_grad():
            assert torch.equal(vae.decode(latents).sample, ref.decode(latents).sample), name
            assert torch.equal(vae.encode(image).latent_dist.mean, ref.encode(image).latent_dist.mean), name


def check_against_diffusers(bfl: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
    config, ours = convert_vae_state_dict(bfl, metadata)
    theirs = convert_ldm_vae_checkpoint(dict(bfl), config)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.device("meta"):
        model = AutoencoderKL.from_config(config)
    model.load_state_dict(ours, strict=True, assign=True)  # every tensor has its place, none is missing
    return config


def test_tiny_conversion_equals_diffusers_converter(tiny_pipelines):
    ref = reference(tiny_pipelines["dev"], "VAE")
    bfl = to_bfl_vae({k: v.detach() for k, v in ref.state_dict().items()}, dict(ref.config))
    assert "encoder.mid.attn_1.q.weight" in bfl and bfl["encoder.mid.attn_1.q.weight"].ndim == 4
    check_against_diffusers(bfl, {GROUPS_METADATA: "4"})


def test_flux_width_conversion_equals_diffusers_converter_and_config():
    with torch.device("meta"):
        shapes = AutoencoderKL.from_config(FLUX_VAE_CONFIG).state_dict()
    bfl_meta = to_bfl_vae(shapes, FLUX_VAE_CONFIG)
    g = torch.Generator().manual_seed(0)
    bfl = {k: torch.randn(t.shape, generator=g, dtype=torch.bfloat16) for k, t in bfl_meta.items()}
    config = check_against_diffusers(bfl, {})  # no metadata: a real ae.safetensors has none
    assert {k: v for k, v in config.items() if not k.startswith("_")} == FLUX_VAE_CONFIG


def test_vaes_fluxloom_cannot_build_are_named(dev_files, tmp_path):
    tensors = load_file(dev_files["vae"])
    save_file(tensors, tmp_path / "narrow.safetensors")  # 8 channels wide, no group count
    with pytest.raises(FormatError, match=GROUPS_METADATA):
        load_vae_file(tmp_path / "narrow.safetensors")
    tensors["decoder.conv_in.weight"] = tensors["decoder.conv_in.weight"][:, :4].contiguous()
    save_file(tensors, tmp_path / "sd.safetensors", metadata={GROUPS_METADATA: "4"})
    with pytest.raises(FormatError, match="4 latent channels is not FLUX's"):
        load_vae_file(tmp_path / "sd.safetensors")
    with pytest.raises(FormatError, match="not a VAE"):
        load_vae_file(dev_files["bfl-fp32"])


def test_vae_estimate_is_the_loaded_size(dev_files):
    from nodes.flux.formats import estimate_file_bytes
    from server.models import module_bytes

    for name in ("vae", "all-in-one"):
        vae = load_vae_file(dev_files[name], torch.bfloat16)
        assert estimate_file_bytes(dev_files[name], "none", torch.bfloat16, part="vae") == module_bytes(vae)
