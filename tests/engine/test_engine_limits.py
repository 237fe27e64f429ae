"""Limits that keep one prompt from taking the server down: nodes per prompt, how large a value a
node may output, error reports that cannot fail in turn, and interruption everywhere a large
prompt spends time (issue: hardening — huge graphs, output amplification, an error that hides
itself)."""

from __future__ import annotations

import nodes
from nodes.base import NodeEnv
from server.cache import OutputCache
from server.executor import Executor, ValueLimits
from server.validation import ValidationError, validate_prompt


def app_executor(tmp_path, limits: ValueLimits | None = None) -> Executor:
    registry = nodes.load_all()
    env = NodeEnv(models_dir=tmp_path / "models", output_dir=tmp_path / "out", temp_dir=tmp_path / "tmp")
    return Executor(registry, env, OutputCache(256 * 2**20), limits)


def doubling_text(n: int, seed: str) -> dict:
    """Text → JoinText(t, t) n times → ShowValue: the text doubles at every JoinText."""
    prompt = {"0": {"class_type": "Text", "inputs": {"text": seed}}}
    for i in range(1, n + 1):
        prompt[str(i)] = {
            "class_type": "JoinText",
            "inputs": {"a": [str(i - 1), 0], "b": [str(i - 1), 0], "separator": ""},
            "_meta": {"title": f"double {i}"},
        }
    prompt["out"] = {"class_type": "ShowValue", "inputs": {"value": [str(n), 0]}}
    return prompt


def test_a_node_whose_output_outgrows_the_limit_is_stopped_and_named(tmp_path):
    ex = app_executor(tmp_path, ValueLimits(max_string_chars=1000))
    result = ex.execute(doubling_text(6, "x" * 100), "grow")  # 200, 400, 800, 1600: the 4th fails
    assert result.status == "error"
    assert result.error["node_id"] == "4" and result.error["node_title"] == "double 4"
    assert "1,600 characters, over the limit of 1,000" in result.error["exception_message"]
    assert result.executed == ["0", "1", "2", "3"]


def test_the_default_limit_stops_a_megabyte_doubled_six_times(tmp_path):
    result = app_executor(tmp_path).execute(doubling_text(6, "y" * 2**20), "grow")
    assert result.status == "error" and result.error["node_id"] == "5"  # 32 MiB > 16 Mi characters


def test_an_error_whose_message_cannot_be_printed_still_names_its_node(tmp_path):
    """Multiplying by 2^62 240 times makes an integer too long for str() (Python's 4,300
    digit limit): ShowValue fails on it, and so would any naive report of that failure."""
    prompt = {"0": {"class_type": "IntegerMath", "inputs": {"a": 2**62, "b": 1, "operation": "add"}}}
    for i in range(1, 241):
        prompt[str(i)] = {
            "class_type": "IntegerMath",
            "inputs": {"a": [str(i - 1), 0], "b": 2**62, "operation": "multiply"},
        }
    prompt["show"] = {"class_type": "ShowValue", "inputs": {"value": ["240", 0]}, "_meta": {"title": "Shown"}}
    result = app_executor(tmp_path).execute(prompt, "huge")
    err = result.error
    assert result.status == "error"
    assert err["node_id"] == "show" and err["node_type"] == "ShowValue" and err["node_title"] == "Shown"
    assert err["exception_message"] and len(err["exception_message"]) <= 4100
    assert err["current_inputs"]["value"] == "<int>"
    assert err["traceback"] and all(len(line) <= 4100 for line in err["traceback"])


def test_more_nodes_than_the_limit_is_a_comfyui_shaped_error():
    registry = nodes.load_all()
    prompt = {str(i): {"class_type": "Text", "inputs": {"text": "a"}} for i in range(11)}
    try:
        validate_prompt(prompt, registry, max_nodes=10)
    except ValidationError as exc:
        body = exc.as_json()
    else:
        raise AssertionError("11 nodes passed a limit of 10")
    assert body["error"]["type"] == "prompt_too_large" and "11 nodes" in body["error"]["message"]
    assert body["node_errors"] == {}


def many_outputs(n: int) -> dict:
    prompt = {"src": {"class_type": "Text", "inputs": {"text": "cached"}}}
    for i in range(n):
        prompt[str(i)] = {"class_type": "ShowValue", "inputs": {"value": ["src", 0]}}
    return prompt


def test_an_interrupt_stops_a_prompt_of_cached_outputs(tmp_path):
    """A prompt whose many output nodes are all cached spends its time resending their outputs:
    that loop stops at an interrupt too (it used to run to the end, ignoring it)."""
    ex = app_executor(tmp_path)
    prompt = many_outputs(20_000)
    assert ex.execute(prompt, "first").ok
    sent: list[str] = []

    def listener(event: str, data: dict) -> None:
        if event == "executed":
            sent.append(data["node"])
            if len(sent) == 100:
                ex.interrupt()

    again = ex.execute(prompt, "again", listener)
    assert again.status == "interrupted" and not again.executed
    assert 100 <= len(sent) < 200
    assert ex.execute(prompt, "after").ok  # the interrupt does not stick to the next prompt


def test_an_interrupt_stops_the_signing_of_a_large_prompt(tmp_path):
    ex = app_executor(tmp_path)
    vp = validate_prompt(many_outputs(5_000), ex.registry, ex.env)
    events: list[str] = []

    def listener(event: str, data: dict) -> None:
        events.append(event)
        if event == "execution_start":
            ex.interrupt()  # before any node: signatures and cache lookups must notice

    result = ex.execute(vp, "signing", listener)
    assert result.status == "interrupted" and not result.executed and not result.cached
    assert "execution_cached" not in events and events[-2:] == ["execution_interrupted", "executing"]
