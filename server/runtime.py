"""One place that assembles what executes prompts: the node registry, the node environment
(folders, model manager) and an executor with its cache. Used by `fluxloom run`, the server and
the benchmarks, so they all behave the same."""

from __future__ import annotations

import contextlib
import importlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nodes
from nodes.base import NodeEnv, NodeRegistry
from server.cache import OutputCache
from server.executor import Executor
from server.models import ModelManager
from server.paths import workflows_dir

log = logging.getLogger("fluxloom")

# The node package whose model policy the manager is given (absent in a model-free engine).
FLUX_PROVIDER = "nodes.flux.provider"
EXAMPLE_INPUT = "fluxloom-example.png"


@dataclass
class RuntimeConfig:
    models_dir: Path = Path("models")
    output_dir: Path = Path("output")
    input_dir: Path = Path("input")
    temp_dir: Path = Path("temp")
    cache_budget_bytes: int = 4 * 2**30
    vram_budget_bytes: int | None = None  # None: automatic (free device memory)
    ram_budget_bytes: int | None = None  # None: automatic (a share of system RAM)
    ensure_demo_model: bool = True  # create the demo model when no FLUX model is installed
    extra_model_paths: tuple[Path, ...] = ()  # ComfyUI extra_model_paths.yaml files


def config_from_args(args: Any, **dirs: Path) -> RuntimeConfig:
    """The runtime settings of `fluxloom serve` / `run` / `worker` from their parsed options."""
    return RuntimeConfig(
        models_dir=args.models,
        extra_model_paths=tuple(args.extra_model_paths),
        vram_budget_bytes=args.vram_budget,
        ram_budget_bytes=args.ram_budget,
        cache_budget_bytes=args.cache_budget,
        **dirs,
    )


@dataclass
class Runtime:
    registry: NodeRegistry
    env: NodeEnv
    executor: Executor

    @property
    def models(self) -> ModelManager | None:
        """The model manager (the same object nodes see as `ctx.models`), for the server's own
        use: stats, releasing memory."""
        return self.env.models if isinstance(self.env.models, ModelManager) else None


def create_runtime(config: RuntimeConfig, registry: NodeRegistry | None = None) -> Runtime:
    registry = registry or nodes.load_all()
    for d in (config.output_dir, config.input_dir, config.temp_dir):
        Path(d).mkdir(parents=True, exist_ok=True)
    env = NodeEnv(
        models_dir=config.models_dir,
        input_dir=config.input_dir,
        output_dir=config.output_dir,
        temp_dir=config.temp_dir,
        extra_model_paths=config.extra_model_paths,
    )
    attach_models(env, config)
    executor = Executor(registry, env, OutputCache(config.cache_budget_bytes))
    return Runtime(registry=registry, env=env, executor=executor)


def attach_models(env: NodeEnv, config: RuntimeConfig) -> None:
    """Give the nodes a model manager built on the FLUX package's model policy, write the demo
    model when nothing is installed, and let the FLUX prompt hook point missing models at it. A
    node library without that package (a model-free engine) runs without a manager; a package
    that is there but broken (e.g. a missing dependency) is an error, never silently skipped."""
    try:
        flux = importlib.import_module(FLUX_PROVIDER)
        importlib.import_module("nodes.flux.offline").enforce()  # no model ever comes from a hub
    except ModuleNotFoundError as exc:
        if exc.name != FLUX_PROVIDER:
            raise
        return
    env.models = ModelManager(
        flux.flux_model_provider(env),
        vram_budget=config.vram_budget_bytes,
        ram_budget=config.ram_budget_bytes,
    )
    if config.ensure_demo_model:
        flux.ensure_some_model(env)
    ensure_example_input(env.input_dir)
    env.prompt_hooks.append(flux.substitute_demo_model)


def ensure_example_input(input_dir: Path) -> None:
    """Put the example image the shipped img2img workflow loads into the input folder (as
    ComfyUI ships input/example.png), unless a file of that name is already there."""
    src, dest = workflows_dir() / EXAMPLE_INPUT, Path(input_dir) / EXAMPLE_INPUT
    if src.is_file() and not dest.exists():
        with contextlib.suppress(OSError):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
