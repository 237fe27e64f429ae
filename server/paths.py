"""Where the shipped files are: the canvas (web/) and the shipped workflows (workflows/).

In a source checkout (and an editable install) they are the repository's folders; after a normal
`pip install .` they are the data packages `fluxloom_data.web` / `fluxloom_data.workflows`
(see setup.py), found with importlib.resources, so the server works from any directory."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _shipped(name: str) -> Path:
    source = REPO_ROOT / name
    if (REPO_ROOT / "pyproject.toml").is_file():  # a source checkout (or an editable install)
        return source
    try:
        return Path(str(resources.files(f"fluxloom_data.{name}")))
    except ModuleNotFoundError:
        return source  # neither: callers report the missing folder


def web_dir() -> Path:
    return _shipped("web")


def workflows_dir() -> Path:
    return _shipped("workflows")
