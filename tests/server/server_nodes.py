"""Test-only nodes for the server tests, in their own registry so they never reach users or
other test areas. A subprocess server loads them with FLUXLOOM_EXTRA_NODES=tests.server.server_nodes."""

from __future__ import annotations

import time

from nodes.base import Float, Input, Int, NodeContext, NodeRegistry, NodeResult, Output, Socket, String

registry = NodeRegistry()


@registry.node(
    "SlowCount",
    category="test",
    description="Counts to `steps`, sleeping `delay` seconds per step and reporting progress.",
    inputs=[
        Input("steps", Int(default=5, min=1, max=100000)),
        Input("delay", Float(default=0.01, min=0.0, max=10.0)),
        Input("start", Int(default=0, min=-(2**31), max=2**31)),
    ],
    outputs=[Output("INT", "count")],
)
def slow_count(ctx: NodeContext, steps: int, delay: float, start: int) -> tuple[int]:
    for i in range(steps):
        time.sleep(delay)
        ctx.progress(i + 1, steps)
    return (start + steps,)


@registry.node(
    "Explode",
    category="test",
    inputs=[Input("value", Socket("*")), Input("message", String(default="boom"))],
    outputs=[Output("INT", "never")],
)
def explode(ctx: NodeContext, value, message: str) -> tuple[int]:
    raise RuntimeError(message)


@registry.node(
    "SaveTestImage",
    category="test",
    description="Writes an 8x8 PNG whose gray level is the input value (mod 256).",
    inputs=[Input("value", Socket("INT")), Input("filename_prefix", String(default="test"))],
    output_node=True,
)
def save_test_image(ctx: NodeContext, value: int, filename_prefix: str) -> NodeResult:
    from PIL import Image

    folder = ctx.env.output_dir / "tests"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{filename_prefix}_{value}_{ctx.prompt_id[:8]}.png"
    Image.new("L", (8, 8), value % 256).save(folder / name)
    return NodeResult(ui={"images": [{"filename": name, "subfolder": "tests", "type": "output"}]})


@registry.node(
    "UnstorableUI",
    category="test",
    description="An output node whose UI output is not JSON (a Path), as a buggy custom node might return.",
    inputs=[Input("value", Int(default=1))],
    output_node=True,
)
def unstorable_ui(ctx: NodeContext, value: int) -> NodeResult:
    from pathlib import Path

    return NodeResult(ui={"text": [Path(f"/nowhere/{value}")]})


@registry.node(
    "OddImages",
    category="test",
    description="UI images as loosely written custom nodes return them: null subfolder, junk entries.",
    inputs=[Input("value", Int(default=1))],
    output_node=True,
)
def odd_images(ctx: NodeContext, value: int) -> NodeResult:
    images = [
        {"filename": f"odd_{value}.png", "subfolder": None, "type": "output"},
        "junk",
        {"filename": 5},
        {"filename": "x.png", "type": ["output"]},
    ]
    return NodeResult(ui={"images": images})
