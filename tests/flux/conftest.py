from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.flux.demo import build_tiny_flux
from server.runtime import RuntimeConfig, create_runtime
from tests.flux.builders import DTYPES, model_dir


@pytest.fixture(scope="session")
def flux_models(tmp_path_factory) -> Path:
    """A models folder with two tiny random FLUX pipelines: dev-like (guidance embeddings) and
    schnell-like (none)."""
    root = tmp_path_factory.mktemp("flux-models")
    build_tiny_flux(model_dir(root, "tiny-dev"), seed=0, guidance_embeds=True)
    build_tiny_flux(model_dir(root, "tiny-schnell"), seed=1, guidance_embeds=False)
    return root


@pytest.fixture(scope="session")
def flux_runtime(flux_models, tmp_path_factory):
    """The real runtime (registry, ModelManager, executor with its cache) over those models."""
    work = tmp_path_factory.mktemp("flux-run")
    config = RuntimeConfig(
        models_dir=flux_models,
        output_dir=work / "output",
        input_dir=work / "input",
        temp_dir=work / "temp",
        cache_budget_bytes=512 * 2**20,
        ensure_demo_model=False,
    )
    return create_runtime(config)


@pytest.fixture(scope="session")
def pipelines(flux_models):
    """diffusers pipelines loaded from the same folders, one per (class, source, dtype)."""
    loaded: dict = {}

    def get(cls, source: str, dtype: str):
        key = (cls.__name__, source, dtype)
        if key not in loaded:
            pipe = cls.from_pretrained(model_dir(flux_models, source), dtype=DTYPES[dtype])
            pipe.set_progress_bar_config(disable=True)
            loaded[key] = pipe
        return loaded[key]

    with torch.no_grad():
        yield get
