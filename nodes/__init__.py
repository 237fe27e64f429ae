"""The node library. `load_all()` imports every node module so that it registers itself."""

import importlib

from nodes.base import REGISTRY, NodeRegistry

# Modules whose import registers nodes in REGISTRY, in menu order.
NODE_MODULES = [
    "nodes.utility",
    "nodes.flux.loaders",
    "nodes.flux.lora_node",
    "nodes.flux.encode",
    "nodes.flux.latent",
    "nodes.flux.sampler",
    "nodes.flux.vae",
    "nodes.flux.offload",
    "nodes.image",
    "nodes.comfy.loaders",
]

_loaded = False


def load_all() -> NodeRegistry:
    global _loaded
    if not _loaded:
        for name in NODE_MODULES:
            importlib.import_module(name)
        _loaded = True
    return REGISTRY
