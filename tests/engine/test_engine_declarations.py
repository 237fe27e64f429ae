"""Declarations are checked against their run functions when registered, and render /object_info."""

import pytest

import nodes
from nodes.base import Combo, DeclarationError, Input, Int, NodeRegistry, Output, Socket


def test_run_function_must_match_inputs():
    reg = NodeRegistry()
    with pytest.raises(DeclarationError, match="no parameter for input 'b'"):

        @reg.node("X", category="t", inputs=[Input("a", Int()), Input("b", Int())], outputs=[Output("INT")])
        def x(ctx, a):
            return (a,)


def test_ctx_first_and_optional_defaults():
    reg = NodeRegistry()
    with pytest.raises(DeclarationError, match="ctx"):
        reg.node("X", category="t", inputs=[Input("a", Int())], outputs=[Output("INT")])(lambda a: a)
    with pytest.raises(DeclarationError, match="needs a default"):

        @reg.node("Y", category="t", inputs=[Input("a", Int(), optional=True)], outputs=[Output("INT")])
        def y(ctx, a):
            return (a,)

    with pytest.raises(DeclarationError, match="not a declared input"):

        @reg.node("Z", category="t", inputs=[], outputs=[Output("INT")])
        def z(ctx, stray):
            return (1,)


def test_bad_specs_rejected():
    reg = NodeRegistry()
    bad = [
        dict(inputs=[Input("a", Int(default=5, min=0, max=3))], outputs=[Output("INT")]),
        dict(inputs=[Input("a", Socket("NOPE"))], outputs=[Output("INT")]),
        dict(inputs=[Input("a", Combo(choices=()))], outputs=[Output("INT")]),
        dict(inputs=[Input("a", Combo(choices=("x",), default="y"))], outputs=[Output("INT")]),
        dict(inputs=[], outputs=[]),
        dict(inputs=[], outputs=[Output("NOPE")]),
    ]
    for i, spec in enumerate(bad):
        with pytest.raises(DeclarationError):
            reg.node(f"N{i}", category="t", **spec)(lambda ctx, **kw: (1,))
    reg.node("Once", category="t", outputs=[Output("INT")])(lambda ctx: (1,))
    with pytest.raises(DeclarationError, match="twice"):
        reg.node("Once", category="t", outputs=[Output("INT")])(lambda ctx: (1,))


def test_object_info_shape_is_comfyui_compatible():
    info = nodes.load_all().object_info()
    entry = info["IntegerMath"]
    assert entry["input"]["required"]["a"][0] == "INT"
    assert entry["input"]["required"]["operation"][0][:2] == ["add", "subtract"]
    assert entry["input_order"] == {"required": ["a", "b", "operation"], "optional": []}
    assert entry["output"] == ["INT"] and entry["output_name"] == ["result"]
    assert entry["output_is_list"] == [False]
    assert entry["output_node"] is False and info["ShowValue"]["output_node"] is True
    for key in ("name", "display_name", "description", "category", "python_module"):
        assert entry[key]


def test_dynamic_combo_choices_follow_the_environment(tmp_path):
    from nodes.base import NodeEnv

    reg = NodeRegistry()

    @reg.node(
        "Pick",
        category="t",
        inputs=[Input("f", Combo(choices=lambda env: sorted(p.name for p in env.input_dir.glob("*.txt"))))],
        outputs=[Output("STRING")],
    )
    def pick(ctx, f):
        return (f,)

    (tmp_path / "b.txt").write_text("")
    (tmp_path / "a.txt").write_text("")
    info = reg.object_info(NodeEnv(input_dir=tmp_path))
    assert info["Pick"]["input"]["required"]["f"][0] == ["a.txt", "b.txt"]
