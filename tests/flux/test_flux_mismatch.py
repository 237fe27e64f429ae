"""FluxSampler with parts that do not fit together: encoders of another model, or a FLUX
transformer variant with extra input channels, fail with a message saying so."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel

from nodes.flux import math as fm
from nodes.flux import quantization as q
from nodes.flux.encode import Conditioning
from nodes.flux.sampler import SamplerSettings, sample
from nodes.flux.sources import load_part
from tests.flux.builders import model_dir

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def transformer(flux_models):
    return load_part(model_dir(flux_models, "tiny-dev"), "FLUX_MODEL", q.NONE, "fp32", CPU).module


def cond(t5_width: int, clip_width: int) -> Conditioning:
    return Conditioning(torch.zeros(1, 8, t5_width), torch.zeros(1, clip_width), torch.zeros(8, 3))


def run(transformer, positive, negative=None, cfg_scale=1.0):
    latent = {"samples": torch.zeros(1, 16, 4, 4)}
    s = SamplerSettings(seed=0, steps=1, true_cfg_scale=cfg_scale)
    with torch.no_grad():
        return sample(
            transformer,
            positive=positive,
            negative=negative,
            latent=latent,
            settings=s,
            shift=fm.ShiftConfig(),
            device=CPU,
        )


def test_matching_conditioning_runs(transformer) -> None:
    config = transformer.config
    out = run(transformer, cond(config.joint_attention_dim, config.pooled_projection_dim))
    assert out.shape == (1, 16, 4, 4)


def test_encoders_of_another_model_are_named(transformer) -> None:
    config = transformer.config
    with pytest.raises(ValueError, match="load CLIP, T5 and the transformer from the same FLUX model"):
        run(transformer, cond(4096, 768))
    good = cond(config.joint_attention_dim, config.pooled_projection_dim)
    with pytest.raises(ValueError, match="T5/CLIP widths 4096/768"):
        run(transformer, good, negative=cond(4096, 768), cfg_scale=2.0)


def test_a_transformer_with_extra_input_channels_is_named(transformer) -> None:
    """FLUX.1 Fill/Depth/Canny transformers take the image's channels next to the noise."""
    config = dict(transformer.config)
    config["in_channels"] = 128
    fill = FluxTransformer2DModel.from_config(config).eval()
    good = cond(config["joint_attention_dim"], config["pooled_projection_dim"])
    with pytest.raises(ValueError, match="takes 128 channels per latent token, not 64"):
        run(fill, good)


def test_vae_encode_takes_a_grayscale_image_as_rgb(flux_models) -> None:
    """SaveImage and VAEEncode accept IMAGEs with 1, 3 or 4 channels; one channel used to reach
    the VAE's first convolution and fail there."""
    from nodes.flux.vae import encode

    vae = load_part(model_dir(flux_models, "tiny-dev"), "VAE", q.NONE, "fp32", CPU)
    vae.device = CPU
    gray = torch.rand(1, 32, 48, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = encode(vae, gray)["samples"]
        rgb = encode(vae, gray.expand(-1, -1, -1, 3))["samples"]
    assert ours.shape == (1, 16, 4, 6) and torch.equal(ours, rgb)
