"""A private node registry for engine tests: counts calls, sleeps, raises. Kept out of the app's
REGISTRY so these nodes never reach users or other test areas."""

from __future__ import annotations

import threading
import time
from collections import Counter

from nodes.base import (
    Boolean,
    Combo,
    Float,
    Input,
    Int,
    NodeContext,
    NodeRegistry,
    NodeResult,
    Output,
    Socket,
    String,
)

registry = NodeRegistry()
calls: Counter[str] = Counter()  # node id → times its run function was called
started = threading.Event()  # set when Slow begins, so a test can interrupt it mid-run


@registry.node(
    "Const",
    category="test",
    inputs=[Input("value", Int(default=1, min=-1000, max=1000))],
    outputs=[Output("INT", "value")],
)
def const(ctx: NodeContext, value: int) -> tuple[int]:
    calls[ctx.node_id] += 1
    return (value,)


@registry.node(
    "Add",
    category="test",
    inputs=[
        Input("a", Socket("INT")),
        Input("b", Socket("INT")),
        Input("bias", Int(default=0, min=-1000, max=1000), optional=True),
    ],
    outputs=[Output("INT", "sum")],
)
def add(ctx: NodeContext, a: int, b: int, bias: int = 0) -> tuple[int]:
    calls[ctx.node_id] += 1
    return (a + b + bias,)


@registry.node(
    "Widgets",
    category="test",
    inputs=[
        Input("seed", Int(default=0, min=0, max=2**64 - 1, control_after_generate=True)),
        Input("scale", Float(default=1.0, min=0.0, max=10.0)),
        Input("text", String(multiline=True)),
        Input("flag", Boolean(default=False)),
        Input("mode", Combo(choices=("a", "b"), default="a")),
    ],
    outputs=[Output("STRING", "summary")],
)
def widgets(ctx: NodeContext, seed: int, scale: float, text: str, flag: bool, mode: str) -> tuple[str]:
    calls[ctx.node_id] += 1
    return (f"{seed}|{scale}|{text}|{flag}|{mode}",)


@registry.node("Record", category="test", inputs=[Input("value", Socket("*"))], output_node=True)
def record(ctx: NodeContext, value) -> NodeResult:
    calls[ctx.node_id] += 1
    return NodeResult(ui={"value": [value]})


@registry.node(
    "Slow",
    category="test",
    inputs=[Input("steps", Int(default=50, min=1, max=10_000)), Input("value", Socket("*"))],
    outputs=[Output("*", "value")],
)
def slow(ctx: NodeContext, steps: int, value) -> tuple:
    calls[ctx.node_id] += 1
    started.set()
    for i in range(steps):
        time.sleep(0.01)
        ctx.progress(i + 1, steps)
    return (value,)


@registry.node("Fail", category="test", inputs=[Input("value", Socket("*"))], outputs=[Output("*", "value")])
def fail(ctx: NodeContext, value) -> tuple:
    calls[ctx.node_id] += 1
    raise RuntimeError(f"boom on purpose (got {value!r})")


@registry.node(
    "Big",
    category="test",
    inputs=[Input("kib", Int(default=1, min=1, max=1 << 20))],
    outputs=[Output("*", "blob")],
)
def big(ctx: NodeContext, kib: int) -> tuple[bytes]:
    calls[ctx.node_id] += 1
    return (bytes(kib * 1024),)
