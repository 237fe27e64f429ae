"""The BFL → diffusers conversion at FLUX.1's real width (hidden 3072, 24 heads of 128, T5 4096,
CLIP 768, one double and one single block) gives exactly what diffusers' own converter gives,
and the config of FLUX.1-dev. About 0.55 B bf16 values (1.1 GB) plus diffusers' copies."""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel
from diffusers.loaders.single_file_utils import (
    convert_flux_transformer_checkpoint_to_diffusers,
    infer_diffusers_model_type,
)

from nodes.flux.formats.bfl_transformer import convert_state_dict, to_bfl

# FLUX.1-dev's transformer/config.json (the published snapshot) less its version and class keys;
# only the block counts differ (19 and 38 there).
FLUX_DEV_CONFIG = {
    "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True,
    "in_channels": 64,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 1,
    "num_single_layers": 1,
    "out_channels": None,
    "patch_size": 1,
    "pooled_projection_dim": 768,
}


def random_bfl_checkpoint() -> dict[str, torch.Tensor]:
    """Random bf16 tensors with the names and shapes of FLUX.1-dev's BFL file. Each 2-D tensor is
    an outer product of two random vectors: no two rows or columns are equal (so a wrong slice or
    a swapped half cannot go unseen), at a fraction of the cost of 0.55 B random draws."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**{k: v for k, v in FLUX_DEV_CONFIG.items() if k != "axes_dims_rope"})
    shapes = to_bfl({k: v for k, v in model.state_dict().items()}, dict(model.config))
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, meta in shapes.items():
        if meta.ndim == 2:
            rows = torch.randn(meta.shape[0], generator=g, dtype=torch.bfloat16)
            cols = torch.randn(meta.shape[1], generator=g, dtype=torch.bfloat16)
            out[key] = torch.outer(rows, cols)
        else:
            out[key] = torch.randn(meta.shape, generator=g, dtype=torch.bfloat16)
    return out


def test_full_width_conversion_equals_diffusers_converter():
    bfl = random_bfl_checkpoint()
    assert bfl["img_in.weight"].shape == (3072, 64) and bfl["single_blocks.0.linear1.weight"].shape == (
        21504,
        3072,
    )
    # diffusers recognises the file as FLUX.1-dev (as from_single_file would, with the prefix)
    assert infer_diffusers_model_type({"model.diffusion_model." + k: v for k, v in bfl.items()}) == "flux-dev"

    config, ours = convert_state_dict(bfl)  # no metadata: the RoPE axes are FLUX.1's at head dim 128
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert {k: v for k, v in config.items() if not k.startswith("_")} == FLUX_DEV_CONFIG
    del theirs

    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    model.load_state_dict(ours, strict=True, assign=True)  # every tensor fits FLUX.1's architecture
    back = to_bfl(ours, config)  # and the writer's direction gives the file back
    assert back.keys() == bfl.keys() and all(torch.equal(back[k], bfl[k]) for k in bfl)
