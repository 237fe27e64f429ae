"""server.runtime: the FLUX model policy (and so the model manager) is optional, but a broken one
is never silently skipped."""

import importlib.abc
import sys

import pytest

import nodes.flux
from nodes.base import NodeEnv
from server.runtime import FLUX_PROVIDER, RuntimeConfig, attach_models


class _Finder(importlib.abc.MetaPathFinder):
    """Makes the FLUX model policy fail to import the way a missing dependency inside it would."""

    def __init__(self, missing: str) -> None:
        self.missing = missing

    def find_spec(self, fullname, path, target=None):
        if fullname == FLUX_PROVIDER:
            raise ModuleNotFoundError(f"No module named {self.missing!r}", name=self.missing)
        return None


def _without_models(monkeypatch, missing: str) -> None:
    monkeypatch.delitem(sys.modules, FLUX_PROVIDER, raising=False)
    monkeypatch.delattr(nodes.flux, "provider", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Finder(missing), *sys.meta_path])


def test_a_broken_model_manager_is_an_error(monkeypatch, tmp_path):
    _without_models(monkeypatch, "bitsandbytes")
    with pytest.raises(ModuleNotFoundError, match="bitsandbytes"):
        attach_models(NodeEnv(models_dir=tmp_path), RuntimeConfig(models_dir=tmp_path))


def test_an_absent_model_manager_leaves_the_engine_model_free(monkeypatch, tmp_path):
    _without_models(monkeypatch, FLUX_PROVIDER)
    env = NodeEnv(models_dir=tmp_path)
    attach_models(env, RuntimeConfig(models_dir=tmp_path))
    assert env.models is None and env.prompt_hooks == []
