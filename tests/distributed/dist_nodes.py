"""Test-only nodes for the distributed tests (loaded by front ends and workers with
FLUXLOOM_EXTRA_NODES, beside tests/server/server_nodes.py)."""

from __future__ import annotations

import os

from nodes.base import Input, Int, NodeContext, NodeRegistry, NodeResult, Output, Socket

registry = NodeRegistry()


@registry.node(
    "Poison",
    category="test",
    description="Kills the process that runs it (as a node that crashes its worker would).",
    inputs=[Input("value", Socket("INT")), Input("code", Int(default=3, min=0, max=255))],
    outputs=[Output("INT", "never")],
)
def poison(ctx: NodeContext, value: int, code: int) -> tuple[int]:
    os._exit(code)


@registry.node(
    "BigImage",
    category="test",
    description="Writes a PNG of noise about `kib` KiB large into the output folder.",
    inputs=[Input("value", Socket("INT")), Input("kib", Int(default=64, min=1, max=65536))],
    output_node=True,
)
def big_image(ctx: NodeContext, value: int, kib: int) -> NodeResult:
    from PIL import Image

    side = int((kib * 1024 / 3) ** 0.5) + 1
    name = f"big_{value}_{ctx.prompt_id[:8]}.png"
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(ctx.env.output_dir / name)
    return NodeResult(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})
