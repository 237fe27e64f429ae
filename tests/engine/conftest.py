import pytest

from server.cache import OutputCache
from server.executor import Executor
from tests.engine import engine_nodes


@pytest.fixture
def executor(tmp_path):
    from nodes.base import NodeEnv

    engine_nodes.calls.clear()
    env = NodeEnv(models_dir=tmp_path / "models", output_dir=tmp_path / "out")
    return Executor(engine_nodes.registry, env, OutputCache(64 * 2**20))


@pytest.fixture
def calls():
    return engine_nodes.calls
