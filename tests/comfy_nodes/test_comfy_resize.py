"""LatentUpscale, ImageScale and the empty latents: sizes, aspect ratio, crop and methods, as
ComfyUI's nodes.py / comfy/utils.py define them (expected values worked out by hand below)."""

from __future__ import annotations

import pytest
import torch

from nodes.base import NodeContext, NodeEnv
from nodes.comfy.images import image_scale
from nodes.comfy.latents import empty_latent_image, empty_sd3_latent_image, latent_upscale
from nodes.flux.latent import VAEPosterior

CTX = NodeContext(env=NodeEnv())


def column_latent(h: int = 8, w: int = 12) -> dict:
    """A latent whose every cell holds its column index (in all 16 channels)."""
    return {"samples": torch.arange(w, dtype=torch.float32).expand(1, 16, h, w).clone()}


def test_empty_latents():
    (sd3,) = empty_sd3_latent_image(CTX, 96, 64, 2)
    assert sd3["samples"].shape == (2, 16, 8, 12) and not sd3["samples"].any()
    (sd,) = empty_latent_image(CTX, 96, 64, 1)
    assert sd["samples"].shape == (1, 4, 8, 12) and not sd["samples"].any()
    # ComfyUI floors to whole latent cells
    assert empty_sd3_latent_image(CTX, 100, 70, 1)[0]["samples"].shape == (1, 16, 8, 12)


def test_latent_upscale_sizes():
    latent = column_latent()  # 96 x 64 pixels
    assert latent_upscale(CTX, latent, "nearest-exact", 128, 128, "disabled")[0]["samples"].shape == (
        1,
        16,
        16,
        16,
    )
    # 0 keeps the aspect ratio: 128 high → round(12 * 128 / 8) = 192 wide
    assert latent_upscale(CTX, latent, "bilinear", 0, 128, "disabled")[0]["samples"].shape == (1, 16, 16, 24)
    assert latent_upscale(CTX, latent, "bilinear", 48 * 8, 0, "disabled")[0]["samples"].shape == (
        1,
        16,
        32,
        48,
    )
    # never below 64 pixels, and both 0 leaves the latent alone
    assert latent_upscale(CTX, latent, "area", 16, 16, "disabled")[0]["samples"].shape == (1, 16, 8, 8)
    assert latent_upscale(CTX, latent, "area", 0, 0, "disabled")[0] is latent


def test_latent_upscale_center_crop():
    # 12 x 8 cells cropped to a square: aspect 1.5 > 1, so round((12 - 12 / 1.5) / 2) = 2 columns
    # go on each side; nearest-exact doubling then repeats columns 2..9.
    (out,) = latent_upscale(CTX, column_latent(), "nearest-exact", 128, 128, "center")
    expected = torch.arange(2, 10, dtype=torch.float32).repeat_interleave(2)
    assert torch.equal(out["samples"][0, 0, 0], expected)
    (plain,) = latent_upscale(CTX, column_latent(), "nearest-exact", 128, 128, "disabled")
    assert plain["samples"][0, 0, 0, 0] == 0 and plain["samples"][0, 0, 0, -1] == 11


def test_latent_upscale_keeps_other_keys_and_drops_the_stale_posterior():
    latent = column_latent()
    latent["batch_index"] = [3]
    latent["posterior"] = VAEPosterior(torch.zeros(1), torch.ones(1), 0.3611, 0.1159)
    (out,) = latent_upscale(CTX, latent, "bicubic", 64, 64, "disabled")
    assert out["batch_index"] == [3] and "posterior" not in out and "posterior" in latent


def test_bislerp_interpolates_directions_on_the_sphere():
    # two unit vectors at a right angle, one cell each; bilinear would shrink the ones between
    samples = torch.zeros(1, 16, 1, 2)
    samples[0, 0, 0, 0] = 1.0
    samples[0, 1, 0, 1] = 1.0
    (out,) = latent_upscale(CTX, {"samples": samples}, "bislerp", 64, 64, "disabled")
    out = out["samples"]
    assert out.shape == (1, 16, 8, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, 8, 8))
    assert torch.equal(out[0, :, 0, 0], samples[0, :, 0, 0])  # the ends stay put
    assert torch.equal(out[0, :, 0, -1], samples[0, :, 0, -1])
    # cell 2's source lies an eighth of the way from the first to the second: 11.25 degrees
    torch.testing.assert_close(out[0, :2, 0, 2], torch.tensor([0.9807853, 0.1950903]))
    # a constant latent stays constant
    constant = torch.full((1, 16, 3, 5), 0.7)
    (same,) = latent_upscale(CTX, {"samples": constant}, "bislerp", 80, 72, "disabled")
    torch.testing.assert_close(same["samples"], torch.full((1, 16, 9, 10), 0.7))


def test_image_scale_sizes_and_crop():
    image = torch.rand(2, 20, 30, 3)
    assert image_scale(CTX, image, "bilinear", 60, 0, "disabled")[0].shape == (2, 40, 60, 3)
    assert image_scale(CTX, image, "bilinear", 0, 10, "disabled")[0].shape == (2, 10, 15, 3)
    assert image_scale(CTX, image, "area", 0, 0, "disabled")[0] is image
    # centre crop to a square: 5 columns off each side of the 30, then nearest-exact to 20 x 20
    (cropped,) = image_scale(CTX, image, "nearest-exact", 20, 20, "center")
    assert torch.equal(cropped, image[:, :, 5:25, :])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_image_scale_lanczos_works_on_8_bit_values(channels):
    image = torch.rand(1, 16, 24, channels)
    (out,) = image_scale(CTX, image, "lanczos", 48, 32, "disabled")
    assert out.shape == (1, 32, 48, channels) and out.dtype == torch.float32
    assert torch.equal(out * 255, (out * 255).round())  # 8-bit steps, as ComfyUI's PIL path gives


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="LatentUpscale: unknown upscale method 'lanczos'"):
        latent_upscale(CTX, column_latent(), "lanczos", 64, 64, "disabled")
    with pytest.raises(ValueError, match="ImageScale: unknown crop 'left'"):
        image_scale(CTX, torch.zeros(1, 8, 8, 3), "bilinear", 4, 4, "left")
