"""Fixtures of the single-file format tests: tiny random FLUX pipelines in diffusers' layout (the
reference), and the same weights written out in each single-file format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.flux.demo import build_tiny_flux
from nodes.flux.formats import writers
from nodes.flux.sources import load_part
from tests.formats.helpers import CPU, FP8, reference


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory) -> dict[str, Path]:
    """Two tiny random FLUX pipelines: dev-like (guidance embeddings) and schnell-like."""
    root = tmp_path_factory.mktemp("formats-pipelines")
    return {
        "dev": build_tiny_flux(root / "tiny-dev", seed=0, guidance_embeds=True),
        "schnell": build_tiny_flux(root / "tiny-schnell", seed=1, guidance_embeds=False),
    }


@pytest.fixture(scope="session")
def dev_files(tiny_pipelines, tmp_path_factory) -> dict[str, Path]:
    """The tiny dev model written in every single-file format, by name."""
    out = tmp_path_factory.mktemp("formats-files")
    transformer = reference(tiny_pipelines["dev"])
    vae = reference(tiny_pipelines["dev"], "VAE")
    files = {
        "bfl-fp32": writers.write_bfl_transformer(transformer, out / "flux-fp32.safetensors", dtype=None),
        "bfl-bf16": writers.write_bfl_transformer(transformer, out / "flux-bf16.safetensors"),
        "diffusers-fp32": writers.write_diffusers_transformer(
            transformer, out / "flux-diffusers.safetensors"
        ),
        "scaled": writers.write_bfl_transformer(
            transformer, out / "flux-fp8-scaled.safetensors", fp8=torch.float8_e4m3fn, scaled=True
        ),
        "vae": writers.write_bfl_vae(vae, out / "ae.safetensors"),
    }
    for name, dtype in FP8.items():
        files[name] = writers.write_bfl_transformer(
            transformer, out / f"flux-fp8-{name}.safetensors", fp8=dtype
        )
    for qtype in ("Q8_0", "Q4_0"):
        files[qtype] = writers.write_gguf_transformer(transformer, out / f"flux-{qtype}.gguf", qtype)
    clip = load_part(tiny_pipelines["dev"], "CLIP", "none", "fp32", CPU).module
    t5 = load_part(tiny_pipelines["dev"], "T5", "none", "fp32", CPU).module
    files["all-in-one"] = writers.write_all_in_one(
        out / "flux-all-in-one.safetensors", transformer=transformer, vae=vae, clip=clip, t5=t5, dtype=None
    )
    return files
