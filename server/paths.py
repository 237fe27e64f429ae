"""Where the shipped files are: the canvas (web/) and the shipped workflows (workflows/).

In a source checkout (and an editable install) they are the repository's folders; after a normal
`pip install .` they are the data packages `fluxloom_data.web` / `fluxloom_data.workflows`
(see setup.py), found through the import system, so the server works from any directory."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _shipped(name: str) -> Path:
    source = REPO_ROOT / name
    if (REPO_ROOT / "pyproject.toml").is_file():  # a source checkout (or an editable install)
        return source
    try:
        spec = importlib.util.find_spec(f"fluxloom_data.{name}")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return source  # neither: callers report the missing folder
    # A data package without __init__.py is a namespace package: its folder is its search path.
    return Path(next(iter(spec.submodule_search_locations)))


def web_dir() -> Path:
    return _shipped("web")


def workflows_dir() -> Path:
    return _shipped("workflows")
