"""Fixtures: tiny random FLUX pipelines built once per test session, in tmp dirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nodes.flux.demo import DEMO_NAME, build_tiny_flux


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory) -> Path:
    """A pristine demo pipeline folder; copy it, never write into it."""
    return build_tiny_flux(tmp_path_factory.mktemp("demo") / DEMO_NAME, seed=0)


@pytest.fixture
def models_dir(tmp_path, demo_source) -> Path:
    """A models folder laid out as ComfyUI's, holding only the demo model."""
    root = tmp_path / "models"
    (root / "diffusers").mkdir(parents=True)
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (root / sub).mkdir()
    shutil.copytree(demo_source, root / "diffusers" / DEMO_NAME)
    return root


@pytest.fixture
def demo_path(models_dir) -> Path:
    return models_dir / "diffusers" / DEMO_NAME


def create_manager(models_dir, **budgets):
    """A model manager on the FLUX model policy, as the runtime builds it."""
    from nodes.base import NodeEnv
    from nodes.flux.provider import flux_model_provider
    from server.models import ModelManager

    return ModelManager(flux_model_provider(NodeEnv(models_dir=models_dir)), **budgets)
