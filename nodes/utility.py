"""Small general-purpose nodes: numbers and text to drive widgets, and a value viewer.

They need no models, so they are also what the engine's own tests and benchmarks are built of.
"""

from __future__ import annotations

import operator
from typing import Any

from nodes.base import (
    ANY,
    INT,
    STRING,
    Combo,
    Input,
    Int,
    NodeContext,
    NodeResult,
    Output,
    Socket,
    String,
    node,
)

_INT_OPS = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.floordiv,
    "modulo": operator.mod,
    "min": min,
    "max": max,
}
_BIG = 2**63 - 1


@node(
    "IntegerMath",
    category="utils/math",
    display_name="Integer Math",
    description="a (op) b on whole numbers; e.g. derive a seed or a size from another value.",
    inputs=[
        Input("a", Int(default=0, min=-_BIG, max=_BIG)),
        Input("b", Int(default=0, min=-_BIG, max=_BIG)),
        Input("operation", Combo(choices=tuple(_INT_OPS), default="add")),
    ],
    outputs=[Output(INT, "result")],
)
def integer_math(ctx: NodeContext, a: int, b: int, operation: str) -> tuple[int]:
    if operation in ("divide", "modulo") and b == 0:
        raise ZeroDivisionError(f"cannot {operation} {a} by zero (input b is 0)")
    return (_INT_OPS[operation](a, b),)


@node(
    "Text",
    category="utils/text",
    display_name="Text",
    description="A piece of text to feed several prompt inputs at once.",
    inputs=[Input("text", String(multiline=True))],
    outputs=[Output(STRING, "text")],
)
def text(ctx: NodeContext, text: str) -> tuple[str]:
    return (text,)


@node(
    "JoinText",
    category="utils/text",
    display_name="Join Text",
    description="Join two texts with a separator (e.g. a subject and a style).",
    inputs=[
        Input("a", String(multiline=True)),
        Input("b", String(multiline=True)),
        Input("separator", String(default=", ")),
    ],
    outputs=[Output(STRING, "text")],
)
def join_text(ctx: NodeContext, a: str, b: str, separator: str) -> tuple[str]:
    return (separator.join(part for part in (a, b) if part),)


def describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} {list(shape)} {getattr(value, 'dtype', '')}".strip()
    if isinstance(value, dict) and "samples" in value:
        return "LATENT " + describe(value["samples"])
    return str(value)


@node(
    "ShowValue",
    category="utils",
    display_name="Show Value",
    description="Shows any value (numbers, text, tensor shapes) on the node and in the history.",
    inputs=[Input("value", Socket(ANY))],
    output_node=True,
)
def show_value(ctx: NodeContext, value: Any) -> NodeResult:
    return NodeResult(ui={"text": [describe(value)]})
