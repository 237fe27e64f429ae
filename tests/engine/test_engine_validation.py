"""Every validation error type, reported all at once in ComfyUI's JSON shape."""

import pytest

from server.validation import ValidationError, format_errors, validate_prompt
from tests.engine.engine_nodes import registry


def errors_of(prompt) -> dict:
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    payload = info.value.as_json()
    assert set(payload) == {"error", "node_errors"}
    for entry in payload["node_errors"].values():
        assert set(entry) == {"errors", "class_type", "dependent_outputs"}
        for e in entry["errors"]:
            assert set(e) == {"type", "message", "details", "extra_info"}
    return payload


def types(payload, node_id) -> list[str]:
    return [e["type"] for e in payload["node_errors"][node_id]["errors"]]


def test_valid_prompt_is_ordered_and_coerced():
    vp = validate_prompt(
        {
            "9": {"class_type": "Record", "inputs": {"value": ["5", 0]}},
            "5": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0], "bias": "7"}},
            "1": {"class_type": "Const", "inputs": {"value": 3.0}},
        },
        registry,
    )
    assert vp.order == ["1", "5", "9"]
    assert vp.outputs == ["9"]
    assert vp.prompt["5"]["inputs"]["bias"] == 7
    assert vp.prompt["1"]["inputs"]["value"] == 3


def test_unknown_class_type():
    p = errors_of(
        {
            "1": {"class_type": "Nope", "inputs": {}},
            "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
        }
    )
    assert types(p, "1") == ["missing_node_type"]
    assert "Nope" in p["node_errors"]["1"]["errors"][0]["message"]


def test_missing_required_input():
    p = errors_of({"1": {"class_type": "Record", "inputs": {}}})
    assert types(p, "1") == ["required_input_missing"]
    assert p["node_errors"]["1"]["errors"][0]["extra_info"]["input_name"] == "value"
    assert p["node_errors"]["1"]["dependent_outputs"] == ["1"]


def test_malformed_link():
    p = errors_of({"1": {"class_type": "Record", "inputs": {"value": ["1", 0, 5]}}})
    assert types(p, "1") == ["bad_linked_input"]


def test_link_to_missing_node_and_missing_slot():
    p = errors_of(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Add", "inputs": {"a": ["99", 0], "b": ["1", 3]}},
            "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
        }
    )
    messages = [e["message"] for e in p["node_errors"]["2"]["errors"]]
    assert types(p, "2") == ["bad_linked_input", "bad_linked_input"]
    assert "99" in messages[0] and "does not exist" in messages[0]
    assert "slot 3" in messages[1]
    assert p["node_errors"]["2"]["dependent_outputs"] == ["3"]


def test_type_mismatch():
    p = errors_of(
        {
            "1": {
                "class_type": "Widgets",
                "inputs": {"seed": 1, "scale": 1, "text": "", "flag": True, "mode": "a"},
            },
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
            "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
        }
    )
    assert types(p, "2") == ["return_type_mismatch", "return_type_mismatch"]
    assert p["node_errors"]["2"]["errors"][0]["extra_info"]["received_type"] == "STRING"


def test_wrong_value_type_range_and_combo_all_at_once():
    p = errors_of(
        {
            "1": {
                "class_type": "Widgets",
                "inputs": {"seed": -1, "scale": 11.5, "text": ["x"], "flag": "maybe", "mode": "c"},
            },
            "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Const", "inputs": {"value": "seven"}},
            "4": {"class_type": "Record", "inputs": {"value": ["3", 0]}},
        }
    )
    assert p["error"]["type"] == "prompt_outputs_failed_validation"
    assert types(p, "1") == [
        "value_smaller_than_min",
        "value_bigger_than_max",
        "bad_linked_input",
        "invalid_input_type",
        "value_not_in_list",
    ]
    assert types(p, "3") == ["invalid_input_type"]
    assert "'c' not in [a, b]" in p["node_errors"]["1"]["errors"][4]["details"]


def test_widget_given_a_link_to_a_socket_input_value():
    p = errors_of(
        {
            "1": {"class_type": "Add", "inputs": {"a": 1, "b": 2}},
            "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
        }
    )
    assert types(p, "1") == ["invalid_input_type", "invalid_input_type"]


def test_cycle():
    p = errors_of(
        {
            "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
            "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
        }
    )
    assert types(p, "1") == ["dependency_cycle"]
    assert types(p, "2") == ["dependency_cycle"]


def test_no_output_node():
    p = errors_of({"1": {"class_type": "Const", "inputs": {"value": 1}}})
    assert p["error"]["type"] == "prompt_no_outputs"


def test_not_an_object():
    for bad in ([], "x", {}):
        p = errors_of(bad)
        assert p["error"]["type"] == "invalid_prompt"


def test_errors_on_unneeded_nodes_do_not_block():
    vp = validate_prompt(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Const", "inputs": {"value": 5000}},  # out of range but unused
        },
        registry,
    )
    assert vp.order == ["1", "2"]


def test_format_errors_is_readable():
    with pytest.raises(ValidationError) as info:
        validate_prompt({"1": {"class_type": "Record", "inputs": {}, "_meta": {"title": "Out"}}}, registry)
    text = format_errors(info.value.as_json(), {"1": {"_meta": {"title": "Out"}}})
    assert "node 1 (Record, 'Out')" in text and "required_input_missing" in text


def test_coercions():
    vp = validate_prompt(
        {
            "1": {
                "class_type": "Widgets",
                "inputs": {
                    "seed": "18446744073709551615",
                    "scale": "2.5",
                    "text": 12,
                    "flag": "true",
                    "mode": "b",
                },
            },
            "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
        },
        registry,
    )
    assert vp.prompt["1"]["inputs"] == {
        "seed": 2**64 - 1,
        "scale": 2.5,
        "text": "12",
        "flag": True,
        "mode": "b",
    }


def test_class_type_that_is_not_a_string_is_a_node_error():
    # A list is unhashable: it must come back as a node error, not a TypeError from the registry.
    payload = errors_of(
        {
            "1": {"class_type": ["Const"], "inputs": {}},
            "2": {"class_type": {"x": 1}, "inputs": {}},
            "9": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
        }
    )
    assert types(payload, "1") == ["invalid_node"]
    assert types(payload, "2") == ["invalid_node"]
    assert "class_type must be a string" in payload["node_errors"]["1"]["errors"][0]["message"]


def test_meta_that_is_not_an_object_is_replaced_by_the_title():
    vp = validate_prompt(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}, "_meta": None},
            "9": {"class_type": "Record", "inputs": {"value": ["1", 0]}, "_meta": "x"},
        },
        registry,
    )
    assert vp.prompt["1"]["_meta"] == {"title": "Const"}
    assert vp.prompt["9"]["_meta"] == {"title": "Record"}


def test_format_errors_with_a_meta_that_is_not_an_object():
    prompt = {"1": {"class_type": "Record", "inputs": {}, "_meta": None}}
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    text = format_errors(info.value.as_json(), prompt)
    assert "node 1 (Record):" in text and "required_input_missing" in text
