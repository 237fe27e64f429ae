"""ComfyUI's core nodes on tiny real FLUX models, through the real runtime (registry, model
manager, executor and its cache), with the test-only nodes of graphs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.flux.demo import build_tiny_flux
from server.runtime import RuntimeConfig, create_runtime
from tests.comfy_nodes.graphs import registry_with_test_nodes
from tests.flux.builders import model_dir


@pytest.fixture(scope="session")
def comfy_models(tmp_path_factory) -> Path:
    """Two tiny random FLUX pipelines: dev-like (guidance embeddings) and schnell-like (none)."""
    root = tmp_path_factory.mktemp("comfy-models")
    build_tiny_flux(model_dir(root, "tiny-dev"), seed=0, guidance_embeds=True)
    build_tiny_flux(model_dir(root, "tiny-schnell"), seed=1, guidance_embeds=False)
    return root


@pytest.fixture(scope="session")
def rt(comfy_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("comfy-run")
    config = RuntimeConfig(
        models_dir=comfy_models,
        output_dir=work / "output",
        input_dir=work / "input",
        temp_dir=work / "temp",
        cache_budget_bytes=256 * 2**20,
        ensure_demo_model=False,
    )
    return create_runtime(config, registry_with_test_nodes())
