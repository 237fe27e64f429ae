"""A custom node module with a web directory, as a node pack with a UI part ships it: loaded
through FLUXLOOM_EXTRA_NODES, its WEB_DIRECTORY's .js files are listed by /api/extensions and
served under /extensions/tests.frontend.web_nodes/."""

from __future__ import annotations

from nodes.base import Input, NodeContext, NodeRegistry, Output, String

WEB_DIRECTORY = "web_nodes_js"

registry = NodeRegistry()


@registry.node(
    "WebEcho",
    category="test",
    description="Returns its text; its pack ships a frontend extension.",
    inputs=[Input("text", String(default="hello"))],
    outputs=[Output("STRING", "text")],
)
def web_echo(ctx: NodeContext, text: str) -> tuple[str]:
    return (text,)
