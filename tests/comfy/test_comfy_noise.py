"""ComfyUI's noise: the starting noise of a seed, batch_index, and the samplers' extra noise."""

from __future__ import annotations

import pytest
import torch

from nodes.comfy import noise as nz
from nodes.flux import math as fm


def comfy_reference_noise(shape, seed, dtype=torch.float32):
    """What ComfyUI's prepare_noise draws: torch.randn from the global generator after
    torch.manual_seed(seed), on the CPU (fork_rng keeps the test's global state as it was)."""
    with torch.random.fork_rng(devices=[]):
        return torch.randn(shape, dtype=dtype, generator=torch.manual_seed(seed), device="cpu")


@pytest.mark.parametrize("seed", [0, 42, 2**63 + 5, nz.MAX_SEED])
def test_noise_is_torch_randn_of_the_latent_shape_from_the_seed(seed):
    latent = torch.zeros(2, 16, 12, 10)
    noise = nz.prepare_noise(latent, seed)
    assert noise.shape == latent.shape and noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise, comfy_reference_noise(latent.shape, seed))
    assert not torch.equal(noise, nz.prepare_noise(latent, seed + 1 if seed < nz.MAX_SEED else 0))


def test_noise_leaves_the_global_generator_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    nz.prepare_noise(torch.zeros(1, 16, 4, 4), 99)
    assert torch.equal(torch.rand(3), expected)


def test_noise_equals_flux_samplers_fp32_noise():
    """The two worlds meet: FluxSampler draws the same fp32 noise from the same seed."""
    shape = (1, 16, 8, 12)
    ours = nz.prepare_noise(torch.zeros(shape), 1234)
    assert torch.equal(ours, fm.draw_noise(shape, fm.seeded_generator(1234), torch.float32, "cpu"))


def test_noise_follows_the_latents_dtype():
    latent = torch.zeros(1, 16, 4, 4, dtype=torch.bfloat16)
    noise = nz.prepare_noise(latent, 7)
    assert noise.dtype == torch.bfloat16
    assert torch.equal(noise, comfy_reference_noise(latent.shape, 7, torch.bfloat16))


def test_batch_index_gives_each_image_the_noise_of_its_index():
    """With batch_index, image i gets the i-th single-image draw of the seed, so an image keeps its
    noise when it is sampled alone or at another place in a batch."""
    single = (1, 16, 6, 6)
    generator = torch.Generator().manual_seed(5)
    draws = [torch.randn(single, generator=generator) for _ in range(4)]
    latent = torch.zeros(3, 16, 6, 6)
    noise = nz.prepare_noise(latent, 5, batch_index=[3, 0, 3])
    assert torch.equal(noise, torch.cat([draws[3], draws[0], draws[3]]))
    assert torch.equal(nz.prepare_noise(latent[:1], 5, batch_index=[2]), draws[2])
    with pytest.raises(ValueError, match="batch_index"):
        nz.prepare_noise(latent, 5, batch_index=[0, 1])


def test_disabled_noise_is_zero():
    latent = torch.ones(2, 16, 4, 4)
    assert torch.equal(nz.empty_noise(latent), torch.zeros_like(latent))


def test_out_of_range_seed_is_named():
    with pytest.raises(ValueError, match="seed .* out of range"):
        nz.prepare_noise(torch.zeros(1, 16, 2, 2), 2**64)


def test_ancestral_noise_comes_from_a_second_generator_with_the_same_seed():
    """ComfyUI seeds the ancestral samplers' generator with the noise seed on the sampler's
    device: on a CPU its first draw is the starting noise again, the next ones are fresh."""
    x = torch.zeros(1, 16, 8, 8)
    draw = nz.default_noise_sampler(x, 42)
    first, second = draw(None, None), draw(None, None)
    assert torch.equal(first, comfy_reference_noise(x.shape, 42))
    assert not torch.equal(first, second)
    again = nz.default_noise_sampler(x, 42)
    assert torch.equal(again(None, None), first) and torch.equal(again(None, None), second)


def test_brownian_tree_noise_is_reproducible_unit_variance_and_additive():
    x = torch.zeros(2, 16, 32, 32)
    tree = nz.BrownianTreeNoiseSampler(x, torch.tensor(0.01), torch.tensor(1.0), seed=3)
    a, b, c = torch.tensor(0.9), torch.tensor(0.5), torch.tensor(0.1)
    ab, bc, ac = tree(a, b), tree(b, c), tree(a, c)
    assert ab.shape == x.shape and ab.dtype == x.dtype
    assert abs(ab.std().item() - 1) < 0.03 and abs(ab.mean().item()) < 0.03
    # One Brownian path: the increment over [c, a] is the sum of those over [c, b] and [b, a].
    whole = ac * (a - c).sqrt()
    assert torch.allclose(ab * (a - b).sqrt() + bc * (b - c).sqrt(), whole, atol=1e-5)
    same = nz.BrownianTreeNoiseSampler(x, torch.tensor(0.01), torch.tensor(1.0), seed=3)
    assert torch.equal(same(a, b), ab)
    other = nz.BrownianTreeNoiseSampler(x, torch.tensor(0.01), torch.tensor(1.0), seed=4)
    assert not torch.allclose(other(a, b), ab)
