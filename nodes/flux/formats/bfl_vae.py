"""FLUX's autoencoder in BFL's (LDM's) key layout — `ae.safetensors`, or the `vae.` part of an
all-in-one checkpoint — as a diffusers AutoencoderKL, with its config read from the tensors.

Layout: `encoder.down.{i}.block.{j}.conv1`, `encoder.down.{i}.downsample.conv`,
`encoder.mid.block_1`, `encoder.mid.attn_1.{q,k,v,proj_out}` (1x1 convolutions), `encoder.norm_out`,
`encoder.conv_out` (2 x 16 channels: mean and log-variance), and the decoder's `up.{i}` numbered
from the lowest resolution, where diffusers numbers `up_blocks` from the highest. What no
tensor holds: the GroupNorm group count (32 in FLUX's VAE; fluxloom's writers put other counts in
the metadata `fluxloom.norm_num_groups`) and the latent scaling (FLUX.1's 0.3611 and 0.1159).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nodes.flux import quantization as q
from nodes.flux.formats import streaming
from nodes.flux.formats.checkpoint_split import VAE, FormatError, TensorDict, TensorFile, part_of
from nodes.flux.formats.streaming import Piece

GROUPS_METADATA = "fluxloom.norm_num_groups"
FLUX_GROUPS = 32
FLUX_LATENT_CHANNELS = 16
FLUX_SCALING = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def is_bfl_vae(keys) -> bool:
    keys = set(keys)
    return (
        "encoder.conv_in.weight" in keys
        and "decoder.conv_out.weight" in keys
        and any(k.startswith("encoder.down.") for k in keys)
    )


def infer_vae_config(source, where: str = "") -> dict[str, Any]:
    """The AutoencoderKL config of the BFL-layout VAE in `source`."""
    keys = source.keys()
    where = where or str(source.path)
    if not is_bfl_vae(keys):
        raise FormatError(
            f"{where}: not a VAE in BFL's layout (no encoder.down.*, encoder.conv_in, decoder.conv_out)"
        )
    levels = _count(keys, r"encoder\.down\.(\d+)\.")
    channels = [source.shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in range(levels)]
    latent = source.shape("decoder.conv_in.weight")[1]
    if latent != FLUX_LATENT_CHANNELS:
        raise FormatError(f"{where}: a VAE with {latent} latent channels is not FLUX's (16)")
    groups = int(source.metadata.get(GROUPS_METADATA, FLUX_GROUPS))
    if any(c % groups for c in channels):
        raise FormatError(
            f"{where}: its widths {channels} are not multiples of {groups} GroupNorm groups; a VAE narrower "
            f"than FLUX's must say its group count in the metadata {GROUPS_METADATA!r}"
        )
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": source.shape("encoder.conv_in.weight")[1],
        "out_channels": source.shape("decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": channels,
        "layers_per_block": _count(keys, r"encoder\.down\.0\.block\.(\d+)\."),
        "act_fn": "silu",
        "latent_channels": latent,
        "norm_num_groups": groups,
        "sample_size": 1024,
        "force_upcast": True,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in keys,
        "use_quant_conv": "quant_conv.weight" in keys,
        "use_post_quant_conv": "post_quant_conv.weight" in keys,
        **FLUX_SCALING,
    }


def diffusers_key(key: str, levels: int) -> str:
    """The diffusers AutoencoderKL name of one BFL/LDM VAE tensor."""
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
    key = re.sub(
        r"^decoder\.up\.(\d+)\.block\.",
        lambda m: f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.resnets.",
        key,
    )
    key = re.sub(
        r"^decoder\.up\.(\d+)\.upsample\.",
        lambda m: f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0.",
        key,
    )
    key = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m.group(1)) - 1}.", key)
    key = re.sub(
        r"\.mid\.attn_1\.(\w+)\.", lambda m: f".mid_block.attentions.0.{_ATTENTION[m.group(1)]}.", key
    )
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


def vae_plan(source, config: dict[str, Any]) -> list[Piece]:
    levels = len(config["block_out_channels"])
    plan = []
    for key in source.keys():
        target = diffusers_key(key, levels)
        plan.append(Piece(target, key, flatten=".attentions.0.to_" in target and target.endswith(".weight")))
    return plan


def convert_vae_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """(config, diffusers state dict) of an in-memory BFL-layout VAE state dict."""
    source = TensorDict(state_dict, metadata or {})
    config = infer_vae_config(source)
    return config, {p.target: p.take(state_dict[p.source]) for p in vae_plan(source, config)}


def to_bfl_vae(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in BFL's layout (attention weights as 1x1 convolutions)."""
    levels = len(config["block_out_channels"])
    names = {}
    for key in _bfl_vae_keys(config):
        names[diffusers_key(key, levels)] = key
    out = {}
    for target, tensor in state_dict.items():
        if target not in names:
            raise FormatError(f"the VAE tensor {target} has no BFL name")
        flat = ".attentions.0.to_" in target and target.endswith(".weight")
        out[names[target]] = tensor.reshape(*tensor.shape, 1, 1) if flat else tensor
    return out


def _bfl_vae_keys(config: dict[str, Any]) -> list[str]:
    """Every tensor name of a BFL-layout VAE with `config` (both weight and bias of each layer)."""
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    layer_names = ["conv_in", "norm_out", "conv_out"]
    layer_names += [f"mid.block_{i}.{n}" for i in (1, 2) for n in ("norm1", "conv1", "norm2", "conv2")]
    layer_names += [f"mid.attn_1.{n}" for n in _ATTENTION]
    names = [f"{stage}.{n}" for stage in ("encoder", "decoder") for n in layer_names]
    for i in range(levels):
        for j in range(layers):
            names += [
                f"encoder.down.{i}.block.{j}.{n}"
                for n in ("norm1", "conv1", "norm2", "conv2", "nin_shortcut")
            ]
        names.append(f"encoder.down.{i}.downsample.conv")
        for j in range(layers + 1):
            names += [
                f"decoder.up.{i}.block.{j}.{n}" for n in ("norm1", "conv1", "norm2", "conv2", "nin_shortcut")
            ]
        names.append(f"decoder.up.{i}.upsample.conv")
    names += ["quant_conv", "post_quant_conv"]
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


def load_vae_file(path, dtype="auto", device="cpu") -> torch.nn.Module:
    """A diffusers AutoencoderKL from a BFL-layout VAE file (ae.safetensors) or the VAE part of an
    all-in-one checkpoint, on `device` in `dtype` (a torch dtype or "auto"/"bf16"/"fp16"/"fp32")."""
    from diffusers import AutoencoderKL

    device = torch.device(device)
    part = part_of(TensorFile(Path(path)), VAE)
    config = infer_vae_config(part)
    dtype = streaming.resolve_dtype(dtype, part, device)
    model = streaming.build_empty(AutoencoderKL, config)
    streaming.stream_into(model, part, vae_plan(part, config), q.NONE, dtype, device)
    return model.eval()
