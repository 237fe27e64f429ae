"""A random FLUX.1 pipeline built offline: the demo model, and the models tests and benchmarks load.

`build_tiny_flux` writes a complete diffusers pipeline folder (model_index.json, scheduler,
CLIP + tokenizer, T5 + tokenizer, transformer, 16-channel VAE; the tokenizers and vocabulary
sizes are FLUX.1's real ones, shipped in nodes/flux/assets) that `FluxPipeline.from_pretrained`
loads like a FLUX.1-dev snapshot. Its weights are random, so its images are noise; what it proves
is that every part of fluxloom (loaders, quantization, offloading, sampling, decoding) runs end to
end on a machine without the real 30 GB of weights. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nodes.flux import assets

DEMO_NAME = "fluxloom-demo"
# Written into the folder: the sizes and seed it was built with (benchmarks check it before
# reusing a model they built earlier). The demo is told apart from real models by its name.
DEMO_MARKER = "fluxloom_demo.json"

log = logging.getLogger("fluxloom.models")

# FLUX.1-dev's scheduler config (scheduler/scheduler_config.json of the official snapshot).
FLUX_DEV_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)


@dataclass(frozen=True)
class Preset:
    """Sizes of one random FLUX pipeline. The constraints FLUX puts on them:
    pooled_projection_dim = CLIP hidden size, joint_attention_dim = T5 d_model, and the rope
    axes (each even) sum to the attention head dim."""

    clip_hidden: int
    clip_layers: int
    clip_heads: int
    t5_d_model: int
    t5_d_ff: int
    t5_layers: int
    t5_heads: int
    flux_heads: int
    flux_head_dim: int
    flux_rope: tuple[int, int, int]
    flux_double: int
    flux_single: int
    vae_channels: tuple[int, int, int, int]
    vae_groups: int


PRESETS = {
    # Runs the default 1024x1024, 20-step workflow on a 2-core CPU in seconds. Widths are
    # multiples of 64 so that every quantization backend (nf4 needs that on the CPU) applies;
    # CLIP heads are 64 wide, as CLIP-L's (single-file loaders infer the head count from that).
    "tiny": Preset(
        clip_hidden=64,
        clip_layers=2,
        clip_heads=1,
        t5_d_model=64,
        t5_d_ff=128,
        t5_layers=2,
        t5_heads=2,
        flux_heads=2,
        flux_head_dim=32,
        flux_rope=(8, 12, 12),
        flux_double=1,
        flux_single=1,
        vae_channels=(8, 8, 8, 8),
        vae_groups=4,
    ),
    # About 1.5 GB of fp32 weights with the transformer clearly larger than T5, as in FLUX.1
    # (11.9 B vs 4.8 B parameters): large enough that memory phases show in a process's RSS.
    "medium": Preset(
        clip_hidden=256,
        clip_layers=4,
        clip_heads=4,
        t5_d_model=768,
        t5_d_ff=2048,
        t5_layers=10,
        t5_heads=12,
        flux_heads=12,
        flux_head_dim=64,
        flux_rope=(16, 24, 24),
        flux_double=8,
        flux_single=16,
        vae_channels=(32, 32, 64, 64),
        vae_groups=16,
    ),
}


# --- tokenizers: the real ones, shipped with fluxloom ---------------------------------------


def build_clip_tokenizer():
    """CLIP-L's real tokenizer (49,408 tokens), so that a demo text encoder written as a single
    file works with the tokenizer fluxloom ships for single files."""
    return assets.clip_tokenizer()


def build_t5_tokenizer():
    """T5-XXL's real tokenizer (32,100 pieces; the demo T5 has T5's 32,128 embedding rows)."""
    return assets.t5_tokenizer()


# --- components -----------------------------------------------------------------------------


def _clip(p: Preset, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.clip_hidden,
        intermediate_size=4 * p.clip_hidden,
        num_hidden_layers=p.clip_layers,
        num_attention_heads=p.clip_heads,
        max_position_embeddings=77,
        projection_dim=p.clip_hidden,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def _t5(p: Preset, tokenizer):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=max(len(tokenizer), assets.T5_VOCAB_SIZE),  # T5's 32,128 rows for 32,100 pieces
        d_model=p.t5_d_model,
        d_kv=p.t5_d_model // p.t5_heads,
        d_ff=p.t5_d_ff,
        num_layers=p.t5_layers,
        num_heads=p.t5_heads,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX's T5-XXL
        relative_attention_num_buckets=32,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config)


def _transformer(p: Preset, guidance_embeds: bool):
    from diffusers import FluxTransformer2DModel

    assert sum(p.flux_rope) == p.flux_head_dim and all(a % 2 == 0 for a in p.flux_rope)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2x2
        num_layers=p.flux_double,
        num_single_layers=p.flux_single,
        attention_head_dim=p.flux_head_dim,
        num_attention_heads=p.flux_heads,
        joint_attention_dim=p.t5_d_model,
        pooled_projection_dim=p.clip_hidden,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=p.flux_rope,
    )


def _vae(p: Preset):
    from diffusers import AutoencoderKL

    # Four blocks give the real scale factor 8; the scaling/shift factors are FLUX.1's.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=p.vae_channels,
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=p.vae_groups,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_flux(path, *, seed: int = 0, guidance_embeds: bool = True, preset: str = "tiny") -> Path:
    """Write a random FLUX pipeline to `path` (replaced if it exists) and return the path.

    guidance_embeds=False gives a schnell-like model (no guidance embedding). The folder is
    written next to its destination and renamed into place, so that a crash never leaves a
    half-written model that would be listed as installed."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)

    clip_tok, t5_tok = build_clip_tokenizer(), build_t5_tokenizer()
    # Each component gets its own seed so that changing one preset size leaves the others be.
    torch.manual_seed(seed)
    text_encoder = _clip(p, clip_tok)
    torch.manual_seed(seed + 1)
    text_encoder_2 = _t5(p, t5_tok)
    torch.manual_seed(seed + 2)
    transformer = _transformer(p, guidance_embeds)
    torch.manual_seed(seed + 3)
    vae = _vae(p)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        text_encoder=text_encoder,
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tok,
        transformer=transformer,
        vae=vae,
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        marker = {"preset": preset, "seed": seed, "guidance_embeds": guidance_embeds}
        (staging / DEMO_MARKER).write_text(_json(marker), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def demo_model_path(models_dir: Path | str) -> Path:
    return Path(models_dir) / "diffusers" / DEMO_NAME


def ensure_demo_model(models_dir: Path | str, *, force: bool = False) -> Path:
    """Build the demo model under MODELS/diffusers/fluxloom-demo unless it is already there."""
    dest = demo_model_path(models_dir)
    if force or not (dest / "model_index.json").is_file():
        log.info("writing the demo model (tiny random FLUX.1, images are noise) to %s", dest)
        build_tiny_flux(dest)
    return dest


def demo_model_main(args: argparse.Namespace) -> int:
    """`fluxloom demo-model [--models DIR] [--force]`."""
    dest = demo_model_path(args.models)
    if (dest / "model_index.json").is_file() and not args.force:
        print(f"{dest} exists (use --force to rebuild)")
        return 0
    ensure_demo_model(args.models, force=True)
    print(dest)
    return 0
