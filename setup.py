"""Packaging glue that pyproject.toml cannot say: the canvas (web/, with the litegraph build that
`npm ci` puts in web/node_modules) and the shipped workflows (workflows/) are installed as the
data packages `fluxloom_data.web` and `fluxloom_data.workflows`, so that a normal
`pip install .` serves them (server/paths.py finds them with importlib.resources). Build the
wheel after `make web-deps`, or the canvas's litegraph is missing from it."""

from setuptools import find_packages, setup

DATA = {"fluxloom_data.web": "web", "fluxloom_data.workflows": "workflows"}

setup(
    packages=[*find_packages(include=["server*", "nodes*"]), *DATA],
    package_dir={"": ".", **DATA},
    package_data={
        "fluxloom_data.web": [
            "*.html",
            "*.css",
            "js/*.js",
            "ext/*",
            "node_modules/@comfyorg/litegraph/package.json",
            "node_modules/@comfyorg/litegraph/dist/**/*",
        ],
        "fluxloom_data.workflows": ["*.json", "*.png"],
        "nodes.flux": ["assets/**/*"],
    },
)
