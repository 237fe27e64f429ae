"""Shared helpers of the FLUX tests: API-format graphs, running them through the real executor,
and the diffusers pipelines they are compared with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from server.runtime import Runtime
from server.validation import validate_prompt

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Settings:
    source: str = "tiny-dev"
    dtype: str = "fp32"
    prompt: str = "a photo of a cat"
    prompt_2: str = ""
    negative: str | None = None
    width: int = 64
    height: int = 64
    batch: int = 1
    steps: int = 4
    seed: int = 42
    guidance: float = 3.5
    true_cfg_scale: float = 1.0
    denoise: float = 1.0
    max_sequence_length: int = 32


def loaders(s: Settings) -> dict[str, Any]:
    return {
        "clip": {"class_type": "LoadCLIP", "inputs": {"source": s.source, "dtype": s.dtype}},
        "t5": {
            "class_type": "LoadT5-8bit",
            "inputs": {"source": s.source, "quantization": "none", "dtype": s.dtype},
        },
        "flux": {
            "class_type": "LoadFluxTransformer",
            "inputs": {"source": s.source, "quantization": "none", "dtype": s.dtype},
        },
        "vae": {"class_type": "LoadVAE", "inputs": {"source": s.source, "dtype": s.dtype}},
    }


def encode(text: str, s: Settings, prompt_2: str = "") -> dict[str, Any]:
    return {
        "class_type": "EncodePrompt",
        "inputs": {
            "clip": ["clip", 0],
            "t5": ["t5", 0],
            "prompt": text,
            "prompt_2": prompt_2,
            "max_sequence_length": s.max_sequence_length,
        },
    }


def sampler(s: Settings, latent: list) -> dict[str, Any]:
    inputs = {
        "model": ["flux", 0],
        "positive": ["pos", 0],
        "latent": latent,
        "seed": s.seed,
        "steps": s.steps,
        "guidance": s.guidance,
        "true_cfg_scale": s.true_cfg_scale,
        "denoise": s.denoise,
    }
    if s.negative is not None:
        inputs["negative"] = ["neg", 0]
    return {"class_type": "FluxSampler", "inputs": inputs}


def txt2img(s: Settings, output: str = "PreviewImage", prefix: str = "parity") -> dict[str, Any]:
    """Loaders → EncodePrompt(s) → EmptyLatent16ch → FluxSampler → VAEDecode → an image output."""
    prompt = loaders(s)
    prompt["pos"] = encode(s.prompt, s, s.prompt_2)
    if s.negative is not None:
        prompt["neg"] = encode(s.negative, s)
    prompt["empty"] = {
        "class_type": "EmptyLatent16ch",
        "inputs": {"width": s.width, "height": s.height, "batch_size": s.batch},
    }
    prompt["sample"] = sampler(s, ["empty", 0])
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}}
    prompt["out"] = _output(output, prefix)
    return prompt


def img2img(
    s: Settings, image_name: str, output: str = "PreviewImage", prefix: str = "i2i"
) -> dict[str, Any]:
    """LoadImage → VAEEncode → FluxSampler(denoise) → VAEDecode."""
    prompt = loaders(s)
    prompt["pos"] = encode(s.prompt, s, s.prompt_2)
    if s.negative is not None:
        prompt["neg"] = encode(s.negative, s)
    prompt["load"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
    prompt["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["load", 0], "vae": ["vae", 0]}}
    prompt["sample"] = sampler(s, ["enc", 0])
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}}
    prompt["out"] = _output(output, prefix)
    return prompt


def _output(kind: str, prefix: str) -> dict[str, Any]:
    if kind == "SaveImage":
        return {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}}
    return {"class_type": kind, "inputs": {"images": ["decode", 0]}}


def run(rt: Runtime, prompt: dict, prompt_id: str = "test", listener=None, extra_data=None):
    result = rt.executor.execute(prompt, prompt_id, listener, extra_data)
    assert result.ok, result.error and (result.error["exception_message"], "".join(result.error["traceback"]))
    return result


def output_of(rt: Runtime, prompt: dict, node_id: str, slot: int = 0):
    """A node's output value from the executor's cache after a run."""
    vp = validate_prompt(prompt, rt.registry, rt.env)
    entry = rt.executor.cache.get(rt.executor.signatures(vp)[node_id])
    assert entry is not None, f"node {node_id} has no cached output"
    return entry.outputs[slot]


def pipeline_kwargs(s: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        prompt=s.prompt,
        prompt_2=s.prompt_2 or None,
        height=s.height,
        width=s.width,
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        num_images_per_prompt=s.batch,
        max_sequence_length=s.max_sequence_length,
        generator=torch.Generator("cpu").manual_seed(s.seed),
    )
    if s.negative is not None:
        kwargs.update(negative_prompt=s.negative, true_cfg_scale=s.true_cfg_scale)
    return kwargs


def as_image(pipeline_pt: torch.Tensor) -> torch.Tensor:
    """diffusers' output_type="pt" [B, C, H, W] → fluxloom's IMAGE [B, H, W, C] float32."""
    return pipeline_pt.permute(0, 2, 3, 1).float()


def model_dir(models_dir: Path, source: str) -> Path:
    return Path(models_dir) / "diffusers" / source
