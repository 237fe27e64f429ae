"""Test-only nodes and prompt builders for the ComfyUI node tests.

MODEL and CLIP values come from fluxloom's own loaders in fp32 through two test-only bridge nodes
that wrap their handles as ComfyUI's loaders do (`DiffusionModel`, `TextEncoders`);
test_comfy_ksampler.py checks that UNETLoader/DualCLIPLoader give the same run. Two more
test-only nodes give FluxSampler's own sigmas as SIGMAS and a random raw LATENT, and `Keep` is an
output node that makes any value's producer run (tests read values from the executor's cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import nodes
from nodes.base import ANY, Input, Int, NodeRegistry, NodeResult, Output, Socket
from nodes.comfy.types import CLIP, MODEL, SIGMAS
from nodes.comfy.values import DiffusionModel, TextEncoders
from nodes.flux import math as fm
from nodes.flux.sampler import schedule
from nodes.flux.types import CLIP_L, FLUX_MODEL, LATENT, T5
from server.runtime import Runtime
from tests.flux.builders import output_of, run

TEST_NODES = NodeRegistry()


@TEST_NODES.node(
    "TestModel", category="test", inputs=[Input("model", Socket(FLUX_MODEL))], outputs=[Output(MODEL)]
)
def as_model(ctx, model):
    return (DiffusionModel(model),)


@TEST_NODES.node(
    "TestClip",
    category="test",
    inputs=[Input("clip", Socket(CLIP_L)), Input("t5", Socket(T5))],
    outputs=[Output(CLIP)],
)
def as_clip(ctx, clip, t5):
    return (TextEncoders(clip, t5),)


@TEST_NODES.node(
    "TestFluxSigmas",
    category="test",
    inputs=[
        Input("model", Socket(FLUX_MODEL)),
        Input("width", Int(default=64, min=16, max=4096)),
        Input("height", Int(default=64, min=16, max=4096)),
        Input("steps", Int(default=4, min=1, max=100)),
    ],
    outputs=[Output(SIGMAS)],
)
def flux_sigmas(ctx, model, width, height, steps):
    """FluxSampler's schedule for this image size, from the model folder's scheduler config."""
    h, w = fm.latent_grid(height, width)
    return (schedule(h, w, steps, fm.ShiftConfig.for_pipeline(Path(model.path)), torch.device("cpu")),)


@TEST_NODES.node(
    "TestLatent",
    category="test",
    inputs=[
        Input("seed", Int(default=0, min=0, max=2**31)),
        Input("width", Int(default=64, min=8, max=4096)),
        Input("height", Int(default=64, min=8, max=4096)),
        Input("channels", Int(default=16, min=1, max=16)),
    ],
    outputs=[Output(LATENT)],
)
def random_latent(ctx, seed, width, height, channels):
    g = torch.Generator().manual_seed(seed)
    return ({"samples": torch.randn(1, channels, height // 8, width // 8, generator=g)},)


@TEST_NODES.node("Keep", category="test", inputs=[Input("value", Socket(ANY))], output_node=True)
def keep_node(ctx, value):
    return NodeResult()


def registry_with_test_nodes() -> NodeRegistry:
    registry = NodeRegistry()
    for d in (*nodes.load_all(), *TEST_NODES):
        registry.register(d)
    return registry


# --- prompt building --------------------------------------------------------------------------


def models(source: str = "tiny-dev") -> dict[str, Any]:
    """fluxloom's loaders (fp32) and the MODEL/CLIP values a ComfyUI loader would make of them."""
    fp32 = {"source": source, "dtype": "fp32"}
    unquantized = {**fp32, "quantization": "none"}
    return {
        "clip_l": {"class_type": "LoadCLIP", "inputs": fp32},
        "t5": {"class_type": "LoadT5-8bit", "inputs": unquantized},
        "flux": {"class_type": "LoadFluxTransformer", "inputs": unquantized},
        "vae": {"class_type": "LoadVAE", "inputs": fp32},
        "model": {"class_type": "TestModel", "inputs": {"model": ["flux", 0]}},
        "clip": {"class_type": "TestClip", "inputs": {"clip": ["clip_l", 0], "t5": ["t5", 0]}},
    }


def text(prompt: str) -> dict[str, Any]:
    return {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["clip", 0]}}


def empty(width: int = 32, height: int = 32, kind: str = "EmptySD3LatentImage") -> dict[str, Any]:
    return {"class_type": kind, "inputs": {"width": width, "height": height, "batch_size": 1}}


def ksampler(latent: list, **settings: Any) -> dict[str, Any]:
    inputs = {
        "model": ["model", 0],
        "seed": 1,
        "steps": 2,
        "cfg": 1.0,
        "sampler_name": "euler",
        "scheduler": "simple",
        "positive": ["pos", 0],
        "negative": ["neg", 0],
        "latent_image": latent,
        "denoise": 1.0,
    }
    inputs.update(settings)
    return {"class_type": "KSampler", "inputs": inputs}


def keep(source: list) -> dict[str, Any]:
    return {"class_type": "Keep", "inputs": {"value": source}}


def encode_prompt(prompt: str, tokens: int = 8) -> dict[str, Any]:
    """fluxloom's EncodePrompt with a short T5 sequence: cheap conditioning for loops of runs."""
    inputs = {"clip": ["clip_l", 0], "t5": ["t5", 0], "prompt": prompt, "prompt_2": ""}
    return {"class_type": "EncodePrompt", "inputs": {**inputs, "max_sequence_length": tokens}}


def txt2img(
    source: str = "tiny-dev", positive: str = "a red fox", negative: str = "blurry", short=False, **settings
) -> dict[str, Any]:
    """models → CLIPTextEncode ×2 (EncodePrompt ×2 when `short`) → EmptySD3LatentImage → KSampler
    → Keep."""
    prompt = models(source)
    encode = encode_prompt if short else text
    prompt.update(pos=encode(positive), neg=encode(negative), empty=empty())
    prompt["sample"] = ksampler(["empty", 0], **settings)
    prompt["out"] = keep(["sample", 0])
    return prompt


def value_of(rt: Runtime, prompt: dict, node_id: str, slot: int = 0, listener=None):
    """Run the prompt, then read one node's output from the executor's cache."""
    run(rt, prompt, listener=listener)
    return output_of(rt, prompt, node_id, slot)


def random_latent_node(seed: int, width: int = 32, height: int = 32, channels: int = 16) -> dict[str, Any]:
    inputs = {"seed": seed, "width": width, "height": height, "channels": channels}
    return {"class_type": "TestLatent", "inputs": inputs}


def decode(latent: list) -> dict[str, Any]:
    return {"class_type": "VAEDecode", "inputs": {"samples": latent, "vae": ["vae", 0]}}
