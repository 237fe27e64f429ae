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
    # ComfyUI's core nodes, with its names and semantics (docs/comfyui.md)
    "nodes.comfy.loaders",
    "nodes.comfy.conditioning",
    "nodes.comfy.conditioning_mix",
    "nodes.comfy.latents",
    "nodes.comfy.images",
    "nodes.comfy.scaling",
    "nodes.comfy.sampling",
    "nodes.comfy.custom_sampling",
    "nodes.comfy.sampler_nodes",
    "nodes.comfy.sigmas",
]

_loaded = False


def load_all() -> NodeRegistry:
    global _loaded
    if not _loaded:
        for name in NODE_MODULES:
            importlib.import_module(name)
        _loaded = True
    return REGISTRY
