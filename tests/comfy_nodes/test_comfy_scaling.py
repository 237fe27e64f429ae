"""LatentUpscaleBy, ImageScaleBy, ImageScaleToTotalPixels and ImageInvert: declared as ComfyUI
declares them (nodes.py, comfy_extras/nodes_post_processing.py at a125cd8) and sized as its
formulas say (expected sizes worked out by hand below)."""

from __future__ import annotations

import pytest
import torch

import nodes
from nodes.base import NodeContext, NodeEnv
from nodes.comfy.scaling import image_invert, image_scale_by, image_scale_to_total_pixels, latent_upscale_by

CTX = NodeContext(env=NodeEnv())
LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


@pytest.mark.parametrize(
    ("class_type", "display", "category", "first", "methods", "factor"),
    [
        (
            "LatentUpscaleBy",
            "Upscale Latent By",
            "latent",
            "samples",
            LATENT_METHODS,
            ("scale_by", 1.5, 0.01, 8.0),
        ),
        (
            "ImageScaleBy",
            "Upscale Image By",
            "image/upscaling",
            "image",
            IMAGE_METHODS,
            ("scale_by", 1.0, 0.01, 8.0),
        ),
        (
            "ImageScaleToTotalPixels",
            "Scale Image to Total Pixels",
            "image/upscaling",
            "image",
            IMAGE_METHODS,
            ("megapixels", 1.0, 0.01, 16.0),
        ),
    ],
)
def test_declared_as_comfyui(class_type, display, category, first, methods, factor):
    info = nodes.load_all().get(class_type).object_info()
    assert (info["display_name"], info["category"]) == (display, category)
    name, default, low, high = factor
    extra = ["resolution_steps"] if class_type == "ImageScaleToTotalPixels" else []
    assert info["input_order"]["required"] == [first, "upscale_method", name, *extra]
    assert info["input"]["required"]["upscale_method"][0] == methods
    options = info["input"]["required"][name][1]
    assert (options["default"], options["min"], options["max"], options["step"]) == (default, low, high, 0.01)
    invert = nodes.load_all().get("ImageInvert").object_info()
    assert (invert["display_name"], invert["category"], invert["input_order"]["required"]) == (
        "Invert Image",
        "image",
        ["image"],
    )


def test_factors_round_each_side():
    latent = {"samples": torch.rand(1, 16, 8, 12), "batch_index": [0]}
    (out,) = latent_upscale_by(CTX, latent, "bilinear", 1.5)
    assert out["samples"].shape == (1, 16, 12, 18) and out["batch_index"] == [0]
    (out,) = latent_upscale_by(CTX, latent, "nearest-exact", 0.3)  # round(2.4), round(3.6)
    assert out["samples"].shape == (1, 16, 2, 4)
    image = torch.rand(1, 30, 50, 3)
    assert image_scale_by(CTX, image, "area", 0.5)[0].shape == (1, 15, 25, 3)
    assert image_scale_by(CTX, image, "lanczos", 2.0)[0].shape == (1, 60, 100, 3)


def test_total_pixels_keeps_the_aspect_ratio():
    image = torch.rand(1, 64, 128, 3)  # 8192 pixels, 2:1
    (out,) = image_scale_to_total_pixels(CTX, image, "bilinear", 0.25)  # 262144 pixels: x sqrt(32)
    assert out.shape == (1, 362, 724, 3)  # round(64 * 5.657), round(128 * 5.657)
    (out,) = image_scale_to_total_pixels(CTX, image, "bilinear", 0.25, 16)
    assert out.shape == (1, 368, 720, 3)  # the same, each side to a multiple of 16


def test_invert_and_errors_name_the_node():
    image = torch.rand(1, 4, 4, 3)
    assert torch.allclose(image_invert(CTX, image)[0], 1 - image)
    with pytest.raises(ValueError, match="ImageScaleBy: the image would be 0x0 pixels"):
        image_scale_by(CTX, torch.rand(1, 4, 4, 3), "area", 0.01)
