"""The output cache: identical prompts re-run nothing, a changed widget re-runs only its node and
descendants, the cache survives switching workflows, and a RAM budget evicts least-recently-used."""

from server.cache import OutputCache
from server.executor import Executor
from tests.engine.engine_nodes import registry


def chain(a: int = 1, b: int = 2, bias: int = 0) -> dict:
    return {
        "1": {"class_type": "Const", "inputs": {"value": a}},
        "2": {"class_type": "Const", "inputs": {"value": b}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0], "bias": bias}},
        "4": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": ["2", 0]}},
        "5": {"class_type": "Record", "inputs": {"value": ["4", 0]}},
    }


def test_identical_prompt_runs_nothing(executor, calls):
    first = executor.execute(chain(), "a")
    assert first.outputs == {"5": {"value": [5]}}
    assert sorted(first.executed) == ["1", "2", "3", "4", "5"]
    calls.clear()
    again = executor.execute(chain(), "b")
    assert again.executed == [] and sum(calls.values()) == 0
    assert again.cached == ["1", "2", "3", "4", "5"]
    assert again.outputs == {"5": {"value": [5]}}  # output nodes' UI comes back from the cache


def test_changed_widget_reruns_node_and_descendants_only(executor, calls):
    executor.execute(chain(), "a")
    calls.clear()
    result = executor.execute(chain(bias=10), "b")
    assert sorted(result.executed) == ["3", "4", "5"]
    assert dict(calls) == {"3": 1, "4": 1, "5": 1}
    assert result.outputs["5"] == {"value": [15]}
    calls.clear()
    result = executor.execute(chain(a=7), "c")
    assert sorted(result.executed) == ["1", "3", "4", "5"]


def test_cache_survives_switching_workflows(executor, calls):
    other = {  # a different workflow, with different node ids, sharing the Const(2) sub-graph
        "10": {"class_type": "Const", "inputs": {"value": 2}},
        "11": {"class_type": "Record", "inputs": {"value": ["10", 0]}},
    }
    executor.execute(chain(), "a")
    executor.execute(other, "b")
    calls.clear()
    back = executor.execute(chain(), "c")
    assert back.executed == [] and sum(calls.values()) == 0
    again = executor.execute(other, "d")
    assert again.executed == []


def test_node_ids_do_not_matter_for_the_signature(executor, calls):
    executor.execute(chain(), "a")
    renumbered = {str(int(k) + 100): v for k, v in chain().items()}
    for node in renumbered.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [str(int(value[0]) + 100), value[1]]
    calls.clear()
    assert executor.execute(renumbered, "b").executed == []


def test_budget_evicts_least_recently_used(tmp_path):
    from nodes.base import NodeEnv

    cache = OutputCache(budget_bytes=300 * 1024)
    ex = Executor(registry, NodeEnv(), cache)

    def blob(kib: int) -> dict:
        return {
            "1": {"class_type": "Big", "inputs": {"kib": kib}},
            "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
        }

    ex.execute(blob(100), "a")  # ~100 KiB for Big + the same bytes referenced by Record's UI
    assert cache.used_bytes <= cache.budget_bytes
    ex.execute(blob(101), "b")
    assert cache.evictions >= 1  # the first blob's entries made room
    assert cache.used_bytes <= cache.budget_bytes
    first_again = ex.execute(blob(100), "c")
    assert "1" in first_again.executed  # evicted, so it ran again
    assert "1" in ex.execute(blob(100), "d").cached  # and is cached now
    ex.execute(blob(1000), "e")  # larger than the whole budget: not kept, nothing breaks
    assert cache.used_bytes <= cache.budget_bytes


def test_lru_order_keeps_recently_used():
    cache = OutputCache(budget_bytes=3000)
    cache.put("a", (bytes(1000),))
    cache.put("b", (bytes(1000),))
    assert cache.get("a") is not None  # touch a: b is now the least recently used
    cache.put("c", (bytes(1500),))
    assert "a" in cache and "c" in cache and "b" not in cache


def test_fingerprinted_node_with_a_linked_widget_runs_every_time(tmp_path):
    """A widget may be fed by a link (a file name from a text node). The fingerprint cannot read
    that file before the source has run, so the node (and what depends on it) is never answered
    from the cache, and nothing it produced takes cache space."""
    from nodes.base import Input, NodeEnv, NodeRegistry, NodeResult, Output, Socket, String

    reg = NodeRegistry()
    runs: list[str] = []

    def content(env, name):
        return (env.input_dir / name).read_text()

    @reg.node("Name", category="t", inputs=[Input("text", String())], outputs=[Output("STRING")])
    def name(ctx, text):
        runs.append("Name")
        return (text,)

    read_inputs = [Input("name", String())]

    @reg.node("ReadFile", category="t", inputs=read_inputs, outputs=[Output("STRING")], fingerprint=content)
    def read_file(ctx, name):
        runs.append("ReadFile")
        return ((ctx.env.input_dir / name).read_text(),)

    @reg.node("Show", category="t", inputs=[Input("v", Socket("*"))], output_node=True)
    def show(ctx, v):
        runs.append("Show")
        return NodeResult(ui={"v": [v]})

    (tmp_path / "a.txt").write_text("first")
    prompt = {
        "1": {"class_type": "Name", "inputs": {"text": "a.txt"}},
        "2": {"class_type": "ReadFile", "inputs": {"name": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"v": ["2", 0]}},
    }
    ex = Executor(reg, NodeEnv(input_dir=tmp_path), OutputCache(2**20))
    first = ex.execute(prompt, "a")
    assert first.ok and first.outputs["3"] == {"v": ["first"]}
    assert len(ex.cache) == 1  # only the text node's output
    (tmp_path / "a.txt").write_text("second")
    runs.clear()
    again = ex.execute(prompt, "b")
    assert again.ok and again.outputs["3"] == {"v": ["second"]}
    assert runs == ["ReadFile", "Show"] and again.cached == ["1"]
    assert len(ex.cache) == 1
