"""Queue management over HTTP: front, delete, clear, interrupt, validation errors, failing nodes,
history paging and deletion, /free."""

from __future__ import annotations

import json
import time
import urllib.request

from server.store import PromptStore
from server.worker import Worker
from tests.server.conftest import Api, ServerThread, client_id, make_runtime, math_prompt, slow_prompt
from tests.server.wsclient import done


def _block(api, steps: int = 2000) -> str:
    """Occupy the worker with a long node so that what follows stays pending."""
    pid = api.queue(slow_prompt(steps=steps, delay=0.01))
    api.wait_job(pid, until=("running",))
    return pid


def test_front_delete_clear(server, api):
    blocker = _block(api)
    a = api.queue(math_prompt(1))
    b = api.queue(math_prompt(2))
    c = api.queue(math_prompt(3))
    front = api.queue(math_prompt(4), front=True)
    pending = api.get("/queue").json()["queue_pending"]
    assert [item[1] for item in pending] == [front, a, b, c]
    assert pending[0][0] < 0  # ComfyUI's "front": a negative number
    assert api.get("/prompt").json() == {"exec_info": {"queue_remaining": 5}}

    assert api.post("/queue", {"delete": [b]}).json() == {"deleted": 1}
    assert [item[1] for item in api.get("/queue").json()["queue_pending"]] == [front, a, c]
    assert api.get(f"/jobs/{b}").status == 404

    assert api.post("/queue", {"clear": True}).json() == {"deleted": 3}
    queue = api.get("/queue").json()
    assert queue["queue_pending"] == [] and [i[1] for i in queue["queue_running"]] == [blocker]
    api.post("/interrupt")
    api.wait_job(blocker)
    assert api.get("/prompt").json()["exec_info"]["queue_remaining"] == 0


def test_interrupt_during_long_node(server, api):
    cid = client_id()
    ws = server.ws(cid)
    ws.recv()
    pid = api.queue(slow_prompt(steps=2000, delay=0.01), client_id=cid)
    started = ws.until(lambda m: m["type"] == "progress" and m["data"]["value"] >= 3)
    # Interrupting another prompt id does nothing; the running one stops at its next step.
    assert api.post("/interrupt", {"prompt_id": "someone-else"}).json() == {"interrupted": False}
    assert api.post("/api/interrupt").json() == {"interrupted": True}
    msgs = started + ws.until(done(pid))
    stopped = [m for m in msgs if m["type"] == "execution_interrupted"]
    assert len(stopped) == 1
    assert stopped[0]["data"]["node_id"] == "1" and stopped[0]["data"]["node_type"] == "SlowCount"
    last_progress = [m["data"]["value"] for m in msgs if m["type"] == "progress"][-1]
    assert last_progress < 2000
    hist = api.get(f"/history/{pid}").json()[pid]
    assert hist["status"]["status_str"] == "error" and hist["status"]["completed"] is False
    assert "execution_interrupted" in [m[0] for m in hist["status"]["messages"]]
    assert api.get(f"/jobs/{pid}").json()["status"] == "interrupted"
    # The queue goes on.
    after = api.queue(math_prompt(5))
    assert api.wait_job(after)["outputs"] == {"2": {"text": ["6"]}}
    ws.close()


def test_validation_errors_are_400_with_node_errors(api):
    bad = {
        "1": {"class_type": "IntegerMath", "inputs": {"a": "x", "b": 1, "operation": "power"}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["9", 0]}},
        "4": {"class_type": "NoSuchNode", "inputs": {}},
    }
    r = api.post("/prompt", {"prompt": bad})
    assert r.status == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"1", "3", "4"}
    types1 = {e["type"] for e in body["node_errors"]["1"]["errors"]}
    assert types1 == {"invalid_input_type", "value_not_in_list"}
    assert body["node_errors"]["3"]["errors"][0]["type"] == "bad_linked_input"
    assert body["node_errors"]["4"]["errors"][0]["type"] == "missing_node_type"
    assert body["node_errors"]["1"]["class_type"] == "IntegerMath"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]
    assert api.get("/queue").json() == {"queue_running": [], "queue_pending": []}

    r = api.post("/prompt", {"client_id": "x"})
    assert r.status == 400 and r.json()["error"]["type"] == "no_prompt"
    r = api.request("POST", "/prompt", raw=b"{not json")
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_json"
    no_outputs = {"1": {"class_type": "IntegerMath", "inputs": {"a": 1, "b": 1, "operation": "add"}}}
    r = api.post("/prompt", {"prompt": no_outputs})
    assert r.status == 400 and r.json()["error"]["type"] == "prompt_no_outputs"


def test_prompt_without_content_type(server, api):
    req = urllib.request.Request(
        api.base + "/prompt",
        data=b'{"prompt": {"1": {"class_type": "IntegerMath", '
        b'"inputs": {"a": 20, "b": 2, "operation": "add"}},'
        b' "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}, "prompt_id": "no-ctype"}',
        method="POST",
    )
    req.remove_header("Content-type")
    with urllib.request.urlopen(req) as r:
        assert r.headers.get("Content-Type", "").startswith("application/json")
        body = r.read()
    assert b'"prompt_id": "no-ctype"' in body
    assert api.wait_job("no-ctype")["outputs"] == {"2": {"text": ["22"]}}
    dup = api.post("/prompt", {"prompt": math_prompt(1), "prompt_id": "no-ctype"})
    assert dup.status == 400 and dup.json()["error"]["type"] == "duplicate_prompt_id"


def test_failing_node_reports_execution_error_and_queue_goes_on(server, api):
    cid = client_id()
    ws = server.ws(cid)
    ws.recv()
    prompt = {
        "1": {"class_type": "IntegerMath", "inputs": {"a": 1, "b": 2, "operation": "add"}},
        "2": {
            "class_type": "Explode",
            "inputs": {"value": ["1", 0], "message": "kaboom"},
            "_meta": {"title": "Bomb"},
        },
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
    }
    pid = api.queue(prompt, client_id=cid)
    msgs = ws.until(done(pid))
    err = [m["data"] for m in msgs if m["type"] == "execution_error"]
    assert len(err) == 1
    assert {k: err[0][k] for k in ("prompt_id", "node_id", "node_type", "exception_message")} == {
        "prompt_id": pid,
        "node_id": "2",
        "node_type": "Explode",
        "exception_message": "kaboom",
    }
    assert err[0]["executed"] == ["1"] and "RuntimeError" in err[0]["exception_type"]
    assert any("kaboom" in line for line in err[0]["traceback"])
    assert set(err[0]) >= {"current_inputs", "current_outputs", "timestamp"}
    job = api.get(f"/jobs/{pid}").json()
    assert job["status"] == "error" and job["error"]["node_title"] == "Bomb"
    ok = api.queue(math_prompt(9), client_id=cid)
    assert api.wait_job(ok)["status"] == "success"
    ws.close()


def test_history_paging_and_deletion(server, api):
    ids = [api.queue(math_prompt(i)) for i in range(6)]
    for pid in ids:
        api.wait_job(pid)
    assert list(api.get("/history").json()) == ids
    assert list(api.get("/history?max_items=2").json()) == ids[-2:]  # ComfyUI: the latest
    assert list(api.get("/history?max_items=2&offset=1").json()) == ids[1:3]
    assert list(api.get("/api/history?max_items=10&offset=4").json()) == ids[4:]
    assert api.get("/history?max_items=x").status == 400
    # Past SQLite's 64-bit integers: still an answer, not a 500.
    assert list(api.get("/history?max_items=99999999999999999999999").json()) == ids
    assert api.get("/history?max_items=1&offset=99999999999999999999999").json() == {}
    assert api.get("/history/unknown").json() == {}
    assert api.post("/history", {"delete": [ids[0], ids[1]]}).json() == {"deleted": 2}
    assert list(api.get("/history").json()) == ids[2:]
    assert api.post("/history", {"clear": True}).json() == {"deleted": 4}
    assert api.get("/history").json() == {}


def test_free_memory_clears_the_output_cache(server, api):
    prompt = slow_prompt(steps=1, start=50)
    api.wait_job(api.queue(prompt))
    cached = api.get(f"/history/{api.wait_job(api.queue(prompt))['prompt_id']}").json()
    assert [m for m in next(iter(cached.values()))["status"]["messages"] if m[0] == "execution_cached"][0][1][
        "nodes"
    ] == ["1", "2"]
    assert api.post("/free", {"unload_models": True, "free_memory": True}).json() == {
        "unload_models": True,
        "free_memory": True,
    }
    for _ in range(100):  # the worker frees between prompts; it polls at least every 0.5 s
        if len(server.runtime.executor.cache) == 0:
            break
        time.sleep(0.02)
    third = api.wait_job(api.queue(prompt))["prompt_id"]
    messages = api.get(f"/history/{third}").json()[third]["status"]["messages"]
    assert [m for m in messages if m[0] == "execution_cached"][0][1]["nodes"] == []


def test_shutdown_requeues_running_prompt_but_keeps_a_user_interrupt(tmp_path):
    data = tmp_path / "data"
    srv = ServerThread(data).start()
    api = Api(srv.url)
    stopped_by_user = api.queue(slow_prompt(steps=500, delay=0.2))
    api.wait_job(stopped_by_user, until=("running",))
    assert api.post("/interrupt").json() == {"interrupted": True}
    srv.stop()  # the node notices the interrupt only after this (its steps take 0.2 s)

    srv = ServerThread(data).start()
    api = Api(srv.url)
    try:
        assert api.get(f"/jobs/{stopped_by_user}").json()["status"] == "interrupted"
        requeued = api.queue(slow_prompt(steps=500, delay=0.05))
        api.wait_job(requeued, until=("running",))
    finally:
        srv.stop()  # a shutdown, not the user: the prompt goes back to the queue
    srv = ServerThread(data).start()
    api = Api(srv.url)
    try:
        assert api.get(f"/jobs/{requeued}").json()["status"] in ("pending", "running")
        api.wait_job(requeued, until=("running",))
        assert api.post("/interrupt", {"prompt_id": requeued}).json() == {"interrupted": True}
        assert api.wait_job(requeued)["status"] == "interrupted"
    finally:
        srv.stop()


def test_unstorable_node_output_fails_the_prompt_and_the_queue_goes_on(server, api):
    cid = client_id()
    ws = server.ws(cid)
    ws.recv()
    bad = api.queue({"1": {"class_type": "UnstorableUI", "inputs": {"value": 3}}}, client_id=cid)
    msgs = ws.until(done(bad))
    job = api.wait_job(bad)
    assert job["status"] == "error"
    assert "not JSON serializable" in job["error"]["exception_message"]
    assert "execution_error" in [m["type"] for m in msgs]
    # The worker survived: the next prompt runs.
    good = api.queue(math_prompt(5))
    assert api.wait_job(good)["outputs"] == {"2": {"text": ["6"]}}
    assert api.get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_malformed_bodies_are_400_not_500(api):
    """Bodies Python's json module would take but that are not JSON (NaN, Infinity, 1e999), and
    nesting deep enough to exhaust the parser, are the client's error, answered as such."""
    prompt = json.dumps(math_prompt(1))
    bodies = {
        b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
        b'{"prompt": %s, "number": NaN}' % prompt.encode(): "NaN",
        b'{"prompt": %s, "number": -Infinity}' % prompt.encode(): "-Infinity",
        b'{"prompt": {"1": {"class_type": "ShowValue", "inputs": {"value": 1e999}}}}': "1e999",
    }
    for raw, named in bodies.items():
        r = api.request("POST", "/prompt", raw=raw)
        assert r.status == 400, r.body
        assert r.json()["error"]["type"] == "invalid_json" and named in r.json()["error"]["message"]
    # Unpaired surrogates parse, but SQLite cannot store them: refused before anything is written.
    for raw in (
        b'{"prompt": %s, "client_id": "\\ud800"}' % prompt.encode(),
        b'{"prompt": %s, "prompt_id": "a\\udfff"}' % prompt.encode(),
    ):
        r = api.request("POST", "/prompt", raw=raw)
        assert r.status == 400 and "unpaired UTF-16 surrogate" in r.json()["error"]["message"]
    r = api.request("POST", "/queue", raw=b'{"delete": ["\\ud800"]}')
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_json"
    r = api.request("POST", "/prompt", raw=b'{"prompt": %s, "client_id": "\\ud83d\\ude00"}' % prompt.encode())
    assert r.status == 200  # a surrogate pair (an escaped emoji) is fine
    assert api.wait_job(r.json()["prompt_id"])["status"] == "success"
    r = api.post("/prompt", {"prompt": math_prompt(1), "number": 10**30})
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_prompt"
    assert api.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    # A large but storable number still queues, and keeps its place in the order.
    r = api.post("/prompt", {"prompt": math_prompt(1), "number": 2**40})
    assert r.status == 200 and r.json()["number"] == 2**40
    assert api.wait_job(r.json()["prompt_id"])["status"] == "success"


def test_interrupt_or_shutdown_before_the_executor_starts_is_not_lost(tmp_path):
    """Between claiming a prompt and execute() clearing its interrupt flag, a user's interrupt
    or a shutdown must still stop the prompt (driven step by step on a worker thread's parts)."""
    runtime = make_runtime(tmp_path)
    store = PromptStore(tmp_path / "queue.sqlite3")
    sent: list[tuple[str, dict]] = []
    worker = Worker(store, runtime, notify=lambda e, d, c: sent.append((e, d)), queue_changed=lambda: None)
    try:
        store.add("by-user", slow_prompt(steps=3), {}, ["2"], None)
        row = store.claim_next()
        worker.running = row
        assert worker.interrupt("by-user")  # lands before execute() starts
        worker._run(row)
        assert store.get("by-user").status == "interrupted"
        assert "execution_interrupted" in [e for e, _ in sent]

        store.add("at-shutdown", slow_prompt(steps=3), {}, ["2"], None)
        row = store.claim_next()
        worker.running = row
        worker._stopping.set()  # what stop() does first, before it interrupts the executor
        runtime.executor.interrupt()
        worker._run(row)
        assert store.get("at-shutdown").status == "pending"  # back in the queue, not run through
    finally:
        store.close()
