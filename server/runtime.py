"""One place that assembles what executes prompts: the node registry, the node environment
(folders, model manager) and an executor with its cache. Used by `fluxloom run`, the server and
the benchmarks, so they all behave the same."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nodes
from nodes.base import NodeEnv, NodeRegistry
from server.cache import OutputCache
from server.executor import Executor

log = logging.getLogger("fluxloom")


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
    extra: dict = field(default_factory=dict)


@dataclass
class Runtime:
    registry: NodeRegistry
    env: NodeEnv
    executor: Executor


def create_runtime(config: RuntimeConfig, registry: NodeRegistry | None = None) -> Runtime:
    registry = registry or nodes.load_all()
    for d in (config.output_dir, config.input_dir, config.temp_dir):
        Path(d).mkdir(parents=True, exist_ok=True)
    env = NodeEnv(
        models_dir=config.models_dir,
        input_dir=config.input_dir,
        output_dir=config.output_dir,
        temp_dir=config.temp_dir,
    )
    attach_models(env, config)
    executor = Executor(registry, env, OutputCache(config.cache_budget_bytes))
    return Runtime(registry=registry, env=env, executor=executor)


def attach_models(env: NodeEnv, config: RuntimeConfig) -> None:
    """Give the nodes a model manager (and the demo model when nothing is installed).
    The FLUX issue fills this in; without it the engine runs model-free nodes only."""
    try:
        model_manager = importlib.import_module("server.models")
    except ModuleNotFoundError as exc:
        if exc.name != "server.models":
            raise  # the module is there but broken (e.g. a missing dependency): say so
        return
    setup = getattr(model_manager, "setup_environment", None)
    if setup is not None:
        setup(env, config)
