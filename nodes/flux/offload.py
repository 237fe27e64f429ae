"""ModelOffload: the two-phase flow made visible. After the prompt is encoded, T5 and CLIP leave
the device before the transformer arrives; passing a value through this node is what orders that
in the graph (the sampler waits for the value, so it runs after the models have left)."""

from __future__ import annotations

from typing import Any

from nodes.base import ANY, Combo, Input, NodeContext, Output, Socket, node
from nodes.flux.handles import ModelHandle
from nodes.flux.types import ANY_MODEL

OFFLOAD = "offload to CPU RAM"
RELEASE = "release"
MODES = (OFFLOAD, RELEASE)


@node(
    "ModelOffload",
    category="flux/loaders",
    display_name="Model Offload",
    description="Moves a model off the device (to CPU RAM, or drops it) once `value` is ready, "
    "and passes `value` on, so that what uses it runs after the model has left.",
    inputs=[
        Input("model", Socket(ANY_MODEL)),
        Input("value", Socket(ANY), tooltip="any value; passed through once the model has left"),
        Input(
            "mode",
            Combo(choices=MODES, default=OFFLOAD),
            tooltip="offload: keep it in CPU RAM for the next run (within the RAM budget); "
            "release: free its memory entirely",
        ),
    ],
    outputs=[Output(ANY, "value")],
)
def model_offload(ctx: NodeContext, model: ModelHandle, value: Any, mode: str) -> tuple[Any]:
    manager = ctx.models
    if not isinstance(model, ModelHandle):
        raise TypeError(f"input 'model' must come from a loader node, got {type(model).__name__}")
    if mode == RELEASE:
        manager.release(model)
    else:
        manager.offload(model)
    return (value,)
