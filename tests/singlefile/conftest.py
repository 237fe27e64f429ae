from __future__ import annotations

import pytest

from server.runtime import RuntimeConfig, create_runtime


@pytest.fixture(scope="session")
def runtime(demo_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("singlefile-run")
    config = RuntimeConfig(
        models_dir=demo_models,
        output_dir=work / "output",
        input_dir=work / "input",
        temp_dir=work / "temp",
        cache_budget_bytes=512 * 2**20,
        ensure_demo_model=False,
    )
    return create_runtime(config)
