"""Execution: only what outputs need, in order; events; interruption; a node that raises."""

import threading

from tests.engine import engine_nodes


def events_of(executor, prompt, pid="p"):
    seen = []
    result = executor.execute(prompt, pid, lambda e, d: seen.append((e, d)))
    return result, seen


def test_runs_only_what_outputs_need_in_order(executor, calls):
    prompt = {
        "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
        "1": {"class_type": "Const", "inputs": {"value": 4}},
        "7": {"class_type": "Const", "inputs": {"value": 9}},  # feeds nothing
    }
    result, seen = events_of(executor, prompt)
    assert result.ok and result.executed == ["1", "2", "3"]
    assert "7" not in calls
    names = [e for e, _ in seen]
    assert names == [
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executing",
        "executed",
        "execution_success",
        "executing",
    ]
    assert seen[-1][1]["node"] is None and seen[-1][1]["prompt_id"] == "p"
    assert seen[5][1] == {"node": "3", "display_node": "3", "output": {"value": [8]}, "prompt_id": "p"}


def test_progress_events(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Slow", "inputs": {"steps": 5, "value": ["1", 0]}},
        "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
    }
    _, seen = events_of(executor, prompt)
    progress = [d for e, d in seen if e == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3, 4, 5]
    assert all(p["max"] == 5 and p["node"] == "2" for p in progress)


def test_interrupt_inside_a_long_node(executor, calls):
    engine_nodes.started.clear()
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Slow", "inputs": {"steps": 2000, "value": ["1", 0]}},
        "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
    }
    box = {}
    t = threading.Thread(target=lambda: box.update(r=events_of(executor, prompt)))
    t.start()
    assert engine_nodes.started.wait(10)
    executor.interrupt()
    t.join(10)
    assert not t.is_alive()
    result, seen = box["r"]
    assert result.status == "interrupted"
    interrupted = [d for e, d in seen if e == "execution_interrupted"][0]
    assert interrupted["node_id"] == "2" and interrupted["executed"] == ["1"]
    assert "3" not in calls
    # the executor stays usable, and the interrupted node was not cached
    prompt["2"]["inputs"]["steps"] = 3
    assert executor.execute(prompt, "again").ok


def test_interrupt_between_nodes(executor, calls):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
        "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
    }

    def listener(event, data):
        if event == "executing" and data["node"] == "1":
            executor.interrupt()  # arrives while node 1 runs: node 2 must not start

    result = executor.execute(prompt, "p", listener)
    assert result.status == "interrupted" and result.executed == ["1"] and "2" not in calls


def test_failing_node_reports_and_executor_goes_on(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 3}},
        "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}, "_meta": {"title": "Breaker"}},
        "3": {"class_type": "Record", "inputs": {"value": ["2", 0]}},
    }
    result, seen = events_of(executor, prompt)
    assert result.status == "error"
    err = result.error
    assert err["node_id"] == "2" and err["node_type"] == "Fail" and err["node_title"] == "Breaker"
    assert err["exception_message"] == "boom on purpose (got 3)"
    assert err["exception_type"] == "builtins.RuntimeError"
    assert any("raise RuntimeError" in line for line in err["traceback"])
    assert err["executed"] == ["1"] and err["current_inputs"] == {"value": "3"}
    assert [e for e, _ in seen][-2:] == ["execution_error", "executing"]
    ok = executor.execute(
        {
            "1": {"class_type": "Const", "inputs": {"value": 3}},
            "3": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
        },
        "next",
    )
    assert ok.ok and ok.cached == ["1"]  # what ran before the failure stayed cached


def test_wrong_number_of_outputs_is_an_error(tmp_path):
    from nodes.base import Input, NodeEnv, NodeRegistry, Output, Socket
    from server.executor import Executor

    reg = NodeRegistry()
    reg.node("Two", category="t", outputs=[Output("INT"), Output("INT")])(lambda ctx: (1,))
    reg.node(
        "Show",
        category="t",
        inputs=[Input("v", Socket("*"))],
        output_node=True,
    )(lambda ctx, v: None)
    r = Executor(reg, NodeEnv()).execute(
        {"1": {"class_type": "Two", "inputs": {}}, "2": {"class_type": "Show", "inputs": {"v": ["1", 1]}}},
        "x",
    )
    assert r.status == "error" and "returned 1 values for 2 outputs" in r.error["exception_message"]


def test_out_of_memory_releases_models(tmp_path):
    from nodes.base import Input, NodeEnv, NodeRegistry, Socket
    from server.executor import Executor

    released = []

    class Models:
        def release_all(self):
            released.append(True)

    reg = NodeRegistry()

    @reg.node("Hungry", category="t", inputs=[Input("v", Socket("*"), optional=True)], output_node=True)
    def hungry(ctx, v=None):
        raise MemoryError("cannot allocate 80 GiB")

    r = Executor(reg, NodeEnv(models=Models())).execute({"1": {"class_type": "Hungry", "inputs": {}}}, "x")
    assert r.status == "error" and released == [True]
    assert r.error["exception_message"].startswith("Out of memory: cannot allocate 80 GiB")
    assert "released" in r.error["exception_message"]


def test_failing_fingerprint_names_its_node(tmp_path):
    from nodes.base import Input, Int, NodeEnv, NodeRegistry, Output, Socket
    from server.executor import Executor

    def gone(env, value):
        raise FileNotFoundError(f"input file {value} vanished")

    reg = NodeRegistry()
    reg.node("Src", category="t", inputs=[Input("value", Int())], outputs=[Output("INT")], fingerprint=gone)(
        lambda ctx, value: (value,)
    )
    reg.node("Show", category="t", inputs=[Input("v", Socket("*"))], output_node=True)(lambda ctx, v: None)
    prompt = {
        "4": {"class_type": "Src", "inputs": {"value": 3}, "_meta": {"title": "Picture"}},
        "5": {"class_type": "Show", "inputs": {"v": ["4", 0]}},
    }
    r = Executor(reg, NodeEnv()).execute(prompt, "x")
    assert r.status == "error"
    assert r.error["node_id"] == "4" and r.error["node_type"] == "Src" and r.error["node_title"] == "Picture"
    assert r.error["exception_message"] == "input file 3 vanished"
    assert r.error["exception_type"] == "builtins.FileNotFoundError"


def test_prompt_hooks_added_later_are_not_bypassed_by_the_memo(executor):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 2}},
        "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
    }
    assert executor.execute(prompt, "a").outputs["2"] == {"value": [2]}

    def bump(p, env):
        p["1"]["inputs"]["value"] = 5
        return ["value bumped"]

    executor.env.prompt_hooks.append(bump)
    result = executor.execute(prompt, "b")
    assert result.outputs["2"] == {"value": [5]}
    assert ("execution_warning", {"prompt_id": "b", "message": "value bumped"}) in result.messages


def test_memo_works_with_hooks_and_follows_what_they_rewrite(executor, calls):
    """The app always installs a prompt hook (demo-model substitution): identical static prompts
    must still reuse their validation, keep the hook's warnings, and notice when the hook
    rewrites differently (the machine's state changed)."""
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 2}},
        "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
    }
    state = {"value": 3}

    def rewrite(p, env):
        p["1"]["inputs"]["value"] = state["value"]
        return [f"value set to {state['value']}"]

    executor.env.prompt_hooks.append(rewrite)
    first = executor.execute(prompt, "a")
    assert first.outputs["2"] == {"value": [3]} and len(executor._prepared) == 1
    again = executor.execute(prompt, "b")
    assert again.executed == [] and len(executor._prepared) == 1  # memo hit
    assert ("execution_warning", {"prompt_id": "b", "message": "value set to 3"}) in again.messages
    state["value"] = 4
    changed = executor.execute(prompt, "c")
    assert changed.outputs["2"] == {"value": [4]} and "1" in changed.executed
    assert prompt["1"]["inputs"]["value"] == 2  # the caller's prompt is never rewritten
