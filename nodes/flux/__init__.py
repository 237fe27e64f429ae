"""FLUX.1 nodes: loaders, prompt encoding, latents, sampling, VAE and offloading."""

from typing import Any

from nodes.base import NodeContext


def model_manager(ctx: NodeContext, where: str) -> Any:
    """The model manager every consuming node (EncodePrompt, FluxSampler, VAE nodes) loads its
    models through; a runtime without one cannot run them."""
    if ctx.env.models is None:
        raise RuntimeError(f"{where} needs the model manager, which this runtime does not have")
    return ctx.env.models
