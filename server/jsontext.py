"""JSON for very large prompts without stalling the server: json.loads and json.dumps of a
10 MB prompt are single C calls that hold the GIL for a quarter to half a second, and while one
runs in any thread the event loop cannot answer anything. Here a large top-level object or list is
decoded and encoded member by member (each member still in C), so the interpreter can switch
threads between members and other requests are answered within its switch interval.

The results are exactly json.loads' and json.dumps' (default separators), so texts written here
and by json.dumps are spliced together freely (server/store.py does)."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator
from typing import Any

PIECEWISE_CHARS = 1 << 20  # smaller texts are decoded in one call: they take a millisecond or so
PIECEWISE_ITEMS = 1000  # members encoded per call; objects and lists under twice this in one call

_PLAIN = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def loads(text: str | bytes | bytearray, **hooks: Any) -> Any:
    """json.loads(text, **hooks) (parse_float, parse_constant, ...), top-level members one at a
    time when the text is large. Raises what json.loads raises."""
    if len(text) < PIECEWISE_CHARS:
        return json.loads(text, **hooks)
    if isinstance(text, bytes | bytearray):  # as json.loads decodes bytes
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
    decoder = json.JSONDecoder(**hooks) if hooks else _PLAIN
    start = _skip(text, 0)
    if start < len(text) and text[start] in "{[":
        with _no_cyclic_gc():
            value, end = _members(text, start, decoder)
        if _skip(text, end) != len(text):
            raise json.JSONDecodeError("Extra data", text, _skip(text, end))
        return value
    return decoder.decode(text)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Decoding a large text makes a million containers, and the cyclic collector, triggered by
    their number, would stop every thread for a quarter of a second to walk them all; decoded
    JSON holds no cycles, so the collector waits until the decode is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _members(text: str, i: int, decoder: json.JSONDecoder) -> tuple[Any, int]:
    """The object or list opening at text[i], each member decoded by the C scanner."""
    scan = decoder.scan_once
    is_object = text[i] == "{"
    close = "}" if is_object else "]"
    result: Any = {} if is_object else []
    i = _skip(text, i + 1)
    if i < len(text) and text[i] == close:
        return result, i + 1
    while True:
        if is_object:
            if i >= len(text) or text[i] != '"':
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
            key, i = scan(text, i)
            i = _skip(text, i)
            if i >= len(text) or text[i] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            i = _skip(text, i + 1)
        try:
            value, i = scan(text, i)
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
        if is_object:
            result[key] = value
        else:
            result.append(value)
        i = _skip(text, i)
        if i < len(text) and text[i] == close:
            return result, i + 1
        if i >= len(text) or text[i] != ",":
            raise json.JSONDecodeError(f"Expecting ',' delimiter or '{close}'", text, i)
        i = _skip(text, i + 1)


def dumps(value: Any, **kw: Any) -> str:
    """json.dumps(value, **kw), a block of members at a time for a large object with string keys
    or a large list (only with json.dumps' default separators, no sorting, no indent)."""
    if (
        isinstance(value, dict | list)
        and len(value) >= 2 * PIECEWISE_ITEMS
        and not ({"separators", "indent", "sort_keys", "cls", "default"} & kw.keys())
        and (isinstance(value, list) or all(type(k) is str for k in value))
    ):
        items = list(value.items()) if isinstance(value, dict) else value
        blocks = (items[i : i + PIECEWISE_ITEMS] for i in range(0, len(items), PIECEWISE_ITEMS))
        # Each block is encoded whole ("{...}" or "[...]") and its brackets dropped.
        encode = (
            (lambda b: json.dumps(dict(b), **kw))
            if isinstance(value, dict)
            else (lambda b: json.dumps(b, **kw))
        )
        inner = ", ".join(encode(b)[1:-1] for b in blocks)
        return "{" + inner + "}" if isinstance(value, dict) else "[" + inner + "]"
    return json.dumps(value, **kw)
