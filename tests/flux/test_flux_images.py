"""LoadImage with unusual files (16-bit grayscale, RGBA, truncated, decompression bombs) and
SaveImage with values outside 0..1 or a prefix without a name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image import read_image, split_prefix, to_uint8


def test_16_bit_grayscale_is_scaled_not_clipped_to_white(tmp_path) -> None:
    ramp = np.linspace(0, 65535, 32 * 16).reshape(16, 32).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # PIL keeps the 16 bits
    image = read_image(path, "gray16.png")
    assert image.shape == (1, 16, 32, 3) and image.dtype == torch.float32
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535.0)
    assert torch.allclose(image[0, ..., 0], expected)
    assert torch.equal(image[..., 0], image[..., 2])
    assert image.min().item() == 0.0 and image.max().item() == 1.0
    assert 0.45 < image.mean().item() < 0.55  # was 0.996: nearly everything white


def test_rgba_and_8_bit_grayscale_keep_their_colours(tmp_path) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png", "rgba.png")
    assert image.shape == (1, 16, 16, 3) and torch.equal(image[0, 0, 0], torch.tensor([200 / 255, 0, 0]))
    Image.fromarray(np.full((16, 16), 51, np.uint8)).save(tmp_path / "l.png")
    assert torch.all(read_image(tmp_path / "l.png", "l.png") == np.float32(51) / np.float32(255))


def test_truncated_and_oversized_images_are_named(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="LoadImage: cannot read input image 'cut.png'"):
        read_image(path, "cut.png")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is over twice that: a "bomb"
    with pytest.raises(ValueError, match="LoadImage: cannot read input image 'big.png'.*decompression bomb"):
        read_image(big, "big.png")


def test_values_outside_the_unit_range_saturate_instead_of_wrapping() -> None:
    images = torch.tensor([[[[1.2, -0.1, 0.5], [float("nan"), 1.0, 0.0]]]])
    assert to_uint8(images).tolist() == [[[[255, 0, 128], [0, 255, 0]]]]


@pytest.mark.parametrize("prefix", [".", "./.", "a/.."])
def test_prefix_without_a_name_is_a_clear_error(tmp_path, prefix) -> None:
    with pytest.raises(ValueError, match="filename_prefix"):
        split_prefix(tmp_path, prefix)
