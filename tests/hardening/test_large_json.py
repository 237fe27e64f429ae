"""A prompt of 100,000 nodes is ~7 MB of JSON; json.loads/json.dumps of it are single C calls that
hold the interpreter for a quarter to half a second, and while one runs (in any thread) the event
loop answers nothing: that was the stall of GET /prompt right after such a prompt was queued.
server/jsontext.py decodes and encodes large texts member by member; these tests check that its
results are json's exactly, that its errors are json's, and that other threads run meanwhile."""

from __future__ import annotations

import json
import threading
import time

import pytest

from server import jsontext
from server.routes.common import _decode
from tests.server.conftest import Api, ServerThread


def huge_prompt(n: int) -> dict:
    prompt = {"0": {"class_type": "IntegerMath", "inputs": {"a": 1, "b": 2, "operation": "add"}}}
    for i in range(1, n + 1):
        prompt[str(i)] = {"class_type": "ShowValue", "inputs": {"value": ["0", 0]}}
    return prompt


SAMPLES = [
    {"a": 1, "b": [1.5, -2e300, None, True, "é\u2028\U0001f600"], "c": {"d": {}}, "e": []},
    [{"x": i, "y": str(i) * (i % 7)} for i in range(50)],
    {str(i): {"n": i, "t": '\\"q"\n'} for i in range(50)},
    {},
    [],
]


@pytest.mark.parametrize("value", SAMPLES)
def test_piecewise_results_equal_json(monkeypatch, value):
    monkeypatch.setattr(jsontext, "PIECEWISE_CHARS", 1)
    monkeypatch.setattr(jsontext, "PIECEWISE_ITEMS", 3)
    for text in (json.dumps(value), json.dumps(value, indent=2), " \n" + json.dumps(value) + "\t"):
        assert jsontext.loads(text) == json.loads(text)
        assert jsontext.loads(text.encode()) == json.loads(text.encode())
    assert jsontext.dumps(value) == json.dumps(value)
    assert jsontext.dumps(value, ensure_ascii=False) == json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize(
    "text",
    ['{"a": 1', '{"a": 1}}', '{"a" 1}', '{"a": 1 "b": 2}', "{a: 1}", '{"a": }', "[1, 2,]", "[1 2]"],
)
def test_piecewise_errors_are_json_errors(monkeypatch, text):
    monkeypatch.setattr(jsontext, "PIECEWISE_CHARS", 1)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        jsontext.loads(text)


def test_request_bodies_keep_their_checks_when_large(monkeypatch):
    """NaN and out-of-range numbers are refused on the piecewise path as on the plain one."""
    monkeypatch.setattr(jsontext, "PIECEWISE_CHARS", 1)
    for body in (b'{"a": NaN}', b'{"a": [1e400]}'):
        with pytest.raises(Exception, match="not valid JSON"):
            _decode(bytearray(body))
    assert _decode(bytearray(b'{"a": [1.25]}')) == {"a": [1.25]}


def _longest_pause(work) -> tuple[float, float]:
    """(the longest time a busy second thread waited for the interpreter while `work` ran, how
    long `work` took)."""
    stop = threading.Event()
    gaps: list[float] = []
    last = [time.perf_counter()]  # the ticker's latest tick

    def ticker() -> None:
        while not stop.is_set():
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.05)
    gaps.clear()
    start = time.perf_counter()
    work()
    end = time.perf_counter()
    # A ticker held off for all of `work` may only wake after `stop` is set and never record its
    # wait: count the time since its last tick too.
    waiting = end - last[0]
    stop.set()
    t.join()
    return max([*gaps, waiting]), end - start


def test_other_threads_run_while_a_huge_prompt_is_decoded_and_encoded():
    """The longest wait of another thread drops from the whole decode to a fraction of it (what
    remains is one cyclic-GC pass after the decode; best of three, as the machine is shared)."""
    prompt = huge_prompt(100_000)
    text = json.dumps(prompt)
    plain_pause, plain_took = _longest_pause(lambda: json.loads(text))
    # json.loads is one call: the other thread waits for all of it (the control for this test).
    assert plain_pause > 0.8 * plain_took
    assert min(_longest_pause(lambda: jsontext.loads(text))[0] for _ in range(3)) < 0.4 * plain_pause
    plain_pause = _longest_pause(lambda: json.dumps(prompt))[0]
    assert min(_longest_pause(lambda: jsontext.dumps(prompt))[0] for _ in range(3)) < 0.4 * plain_pause


def test_a_huge_prompt_is_queued_and_read_back_intact(tmp_path):
    """Over PIECEWISE_CHARS: the request body, the stored prompt and the stored result all take
    the piecewise path, and come back equal."""
    srv = ServerThread(tmp_path / "data").start()
    try:
        api = Api(srv.url)
        prompt = huge_prompt(30_000)
        assert len(json.dumps(prompt)) > jsontext.PIECEWISE_CHARS
        prompt_id = api.queue(prompt)
        assert api.wait_job(prompt_id, timeout=120)["status"] == "success"
        entry = api.get(f"/history/{prompt_id}").json()[prompt_id]
        titled = {k: {**v, "_meta": {"title": v["class_type"]}} for k, v in prompt.items()}
        assert entry["prompt"][2] == titled  # validation gives every node its title
        assert entry["outputs"]["30000"] == {"text": ["3"]}
        assert len(entry["outputs"]) == 30_000
    finally:
        srv.stop()


def test_the_server_settles_the_interpreter_before_serving():
    """`fluxloom serve` shortens the switch interval and puts start-up's objects out of the
    cyclic collector's reach (a full collection over them stopped every thread for ~190 ms)."""
    import gc
    import sys

    from server.app import SWITCH_INTERVAL, settle_interpreter

    before = sys.getswitchinterval()
    try:
        settle_interpreter()
        assert sys.getswitchinterval() == SWITCH_INTERVAL < before
        assert gc.get_freeze_count() > 10_000
        start = time.perf_counter()
        gc.collect()
        assert time.perf_counter() - start < 0.05
    finally:
        gc.unfreeze()
        sys.setswitchinterval(before)
