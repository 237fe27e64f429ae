"""Packaging glue that pyproject.toml cannot say: the canvas (web/, with the litegraph build that
`npm ci` puts in web/node_modules) and the shipped workflows (workflows/) are installed as the
data packages `fluxloom_data.web` and `fluxloom_data.workflows`, so that a normal
`pip install .` serves them (server/paths.py finds them through the import system). Build the
wheel after `make web-deps`, or the canvas's litegraph is missing from it."""

from pathlib import Path

from setuptools import find_packages, setup

DATA = {"fluxloom_data.web": "web", "fluxloom_data.workflows": "workflows"}
# web/'s own folders (js/, ext/) are listed as data packages too, as setuptools wants for folders
# whose names could be imported; node_modules/@comfyorg is not such a name and rides as data.
DATA_SUBPACKAGES = [
    f"fluxloom_data.web.{d.name}"
    for d in sorted(Path("web").iterdir())
    if d.is_dir() and d.name.isidentifier() and d.name != "node_modules"
]

setup(
    packages=[*find_packages(include=["server*", "nodes*"]), *DATA, *DATA_SUBPACKAGES],
    package_dir={"": ".", **DATA},
    package_data={
        "fluxloom_data.web": [
            "*.html",
            "*.css",
            "node_modules/@comfyorg/litegraph/package.json",
            "node_modules/@comfyorg/litegraph/LICENSE",
            "node_modules/@comfyorg/litegraph/dist/**/*",
        ],
        **{name: ["*"] for name in DATA_SUBPACKAGES},
        "fluxloom_data.workflows": ["*.json", "*.png"],
        "nodes.flux": ["assets/**/*"],
    },
)
