"""The queue's scripts and the front end's store against a real redis-server, in process (no
worker processes): ordering, deletion, paging, exactly-once results, reclaiming and
dead-lettering; and the routing rules of affinity.py as plain functions."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from nodes.base import Combo, Input, NodeEnv, NodeRegistry, Output
from server.distributed.affinity import (
    catalog_registry,
    lane_for,
    plan_claim,
    refusal,
    requirements,
)
from server.distributed.config import ClusterConfig
from server.distributed.redis_queue import LaneState, RedisQueue, Snapshot
from server.distributed.redis_store import RedisStore
from tests.distributed.conftest import RedisServer, wait_until
from tests.server.conftest import make_registry, math_prompt


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def queue(redis_server, request):
    cfg = ClusterConfig(
        url=redis_server.url, prefix=request.node.name, visibility_timeout=0.2, max_deliveries=2
    )
    return RedisQueue(cfg)


@pytest.fixture
def store(queue, tmp_path):
    fe = SimpleNamespace(registry=make_registry(), env=NodeEnv(input_dir=tmp_path), frontend_id="fe-test")
    return RedisStore(queue, fe)


def test_store_queue_order_front_position_and_delete(store):
    ids = [f"p{i}" for i in range(4)]
    numbers = [store.add(pid, math_prompt(i), {}, ["2"], None) for i, pid in enumerate(ids)]
    assert numbers == [1.0, 2.0, 3.0, 4.0]
    assert store.add("first", math_prompt(9), {}, ["2"], "c1", front=True) == -5.0
    assert [r.prompt_id for r in store.pending()] == ["first", *ids]
    assert store.position("p2") == 3 and store.position("nope") is None
    assert store.exists("p1") and not store.exists("nope")
    with pytest.raises(ValueError, match="already used"):
        store.add("p1", math_prompt(1), {}, ["2"], None)
    row = store.get("first")
    assert row.status == "pending" and row.client_id == "c1" and row.queue_item()[0] == -5
    assert store.remaining() == 5
    # GET /queue is spliced from the stored texts; it reads back as the decoded rows.
    expected = {
        "queue_running": [r.queue_item() for r in store.running()],
        "queue_pending": [r.queue_item() for r in store.pending()],
    }
    assert json.loads(store.queue_json()) == expected and len(expected["queue_pending"]) == 5
    assert store.delete_pending(["p1", "unknown"]) == 1
    assert store.delete_pending(None) == 4
    assert store.pending() == [] and store.remaining() == 0
    assert store.q.redis.hlen(store.keys.lanes) == 0  # empty lanes disappear with their streams


def claim_all(q: RedisQueue, worker: str) -> list:
    claims = []
    while (c := q.claim(worker, q.lane_ids())) is not None:
        claims.append(c)
    return claims


def test_each_prompt_is_claimed_once_and_finished_once(store, queue):
    for i in range(6):
        store.add(f"p{i}", math_prompt(i), {}, ["2"], None)
    a = queue.claim("wa", queue.lane_ids())
    rest = claim_all(queue, "wb")
    assert sorted([a.prompt_id] + [c.prompt_id for c in rest]) == [f"p{i}" for i in range(6)]
    assert [r.prompt_id for r in store.running()] == [f"p{i}" for i in range(6)]
    running = json.loads(store.queue_json())["queue_running"]
    assert running == [r.queue_item() for r in store.running()] and [i[1] for i in running][0] == "p0"
    final = [("executing", {"node": None, "prompt_id": a.prompt_id})]
    assert not queue.finish("wb", a, "success", {}, [], None, final)  # not wb's to finish
    assert queue.finish("wa", a, "success", {"2": {"text": ["1"]}}, [], None, final)
    assert not queue.finish("wa", a, "success", {}, [], None, final)  # reported once
    row = store.get(a.prompt_id)
    assert row.status == "success" and row.result == {"2": {"text": ["1"]}}
    events = queue.redis.xrange(queue.keys.events("fe-test"))
    assert [e[1][b"e"] for e in events] == [b"executing"]  # the final event, sent once
    for c in rest:
        queue.finish("wb", c, "error", {}, [], {"exception_message": "x"}, [])
    assert [r.prompt_id for r in store.history()] == [a.prompt_id, *[c.prompt_id for c in rest]]
    assert store.remaining() == 0


def test_history_paging_follows_comfyui(store, queue):
    for i in range(5):
        store.add(f"h{i}", math_prompt(i), {}, ["2"], None)
    for c in claim_all(queue, "w"):
        queue.finish("w", c, "success", {}, [], None, [])
    ids = [r.prompt_id for r in store.history()]
    assert ids == [f"h{i}" for i in range(5)]
    assert [r.prompt_id for r in store.history(2)] == ids[-2:]  # the latest two
    assert [r.prompt_id for r in store.history(2, 1)] == ids[1:3]
    assert store.history(0) == [] and store.history(3, 10) == []
    assert store.delete_history(["h0", "h1", "nope"]) == 2
    assert store.delete_history(None) == 3 and store.history() == []


def test_a_silent_worker_loses_its_prompt_and_it_is_dead_lettered_after_max_deliveries(store, queue):
    store.add("p", math_prompt(1), {}, ["2"], None)
    first = queue.claim("w1", queue.lane_ids())
    assert queue.touch("w1", first, "1", 0, 0) == 0  # a heartbeat keeps it
    assert queue.reclaim("w2", queue.lane_ids()) is None
    second = wait_until(lambda: queue.reclaim("w2", queue.lane_ids()), 5, "the visibility timeout")
    assert second.prompt_id == "p" and not second.dead and second.deliveries == 2
    assert second.record["previous_worker"] == "w1" and second.record["node"] == "1"
    assert queue.touch("w1", first, "1", 0, 0) == -1  # w1 learns it lost the prompt
    assert not queue.finish("w1", first, "success", {}, [], None, [])  # and cannot report it
    third = wait_until(lambda: queue.reclaim("w3", queue.lane_ids()), 5, "the visibility timeout")
    assert third.dead and third.deliveries == 2  # delivered twice already: dead, not run again
    # The janitor (dead_only) sees nothing more: the entry is held by w3 now, and fresh.
    assert queue.reclaim("janitor", queue.lane_ids(), dead_only=True) is None


def test_interrupt_flag_and_requeue_to_the_front(store, queue):
    store.add("a", math_prompt(1), {}, ["2"], None)
    store.add("b", math_prompt(2), {}, ["2"], None)
    assert queue.flag_interrupt("b") is None  # not running
    claim = queue.claim("w", queue.lane_ids())
    assert claim.prompt_id == "a" and queue.flag_interrupt("a") == "w"
    assert queue.touch("w", claim, None, 0, 0) == 1
    front = lane_for([], front=True)
    assert queue.requeue("w", claim, front.lane_id, front.meta)
    assert store.get("a").status == "pending"
    again = queue.claim("w2", [front.lane_id, *queue.lane_ids()])
    assert again.prompt_id == "a"


# --- routing rules ------------------------------------------------------------------------------


def snap(lanes: list[tuple[str, list[str], int]], workers: dict, now_ms: int = 10_000) -> Snapshot:
    out = Snapshot(now=now_ms / 1000, workers=workers)
    for lane_id, models, head_ms in lanes:
        requires = [["LoadVAE.source", m] for m in models]
        out.lanes.append(LaneState(lane_id, {"requires": requires, "models": models}, f"{head_ms}-0"))
    return out


CATALOG = {"LoadVAE.source": ["a", "b"]}


def advert(state: str, loaded=(), busy=(), installed=("a", "b")) -> dict:
    return {"state": state, "loaded": list(loaded), "busy_models": list(busy), "installed": list(installed)}


def test_plan_prefers_lanes_whose_models_are_loaded_then_oldest():
    s = snap([("A", ["a"], 9000), ("B", ["b"], 8000), ("N", [], 9500)], {})
    order, recheck = plan_claim("w1", CATALOG, {"a"}, s, 10)
    assert order == ["A", "N", "B"] and recheck is None


def test_plan_leaves_a_lane_to_the_worker_that_holds_its_models_for_a_while():
    s = snap([("B", ["b"], 9000)], {"w2": advert("busy", busy=["b"])})
    assert plan_claim("w1", CATALOG, {"a"}, s, 10) == ([], 9.0)
    old = snap([("B", ["b"], 0)], {"w2": advert("busy", busy=["b"])})
    assert plan_claim("w1", CATALOG, {"a"}, old, 10)[0] == ["B"]  # waited long enough


def test_plan_gives_unloaded_models_to_the_free_worker_with_the_fewest_models():
    s = snap([("B", ["b"], 9900)], {"w2": advert("idle")})
    assert plan_claim("w1", CATALOG, {"a"}, s, 10)[0] == []  # w2 holds nothing: its turn
    assert plan_claim("w1", CATALOG, set(), s, 10)[0] == ["B"]  # tie on count: by name
    busy = snap([("B", ["b"], 9900)], {"w2": advert("busy", busy=["a"])})
    assert plan_claim("w1", CATALOG, {"a"}, busy, 10)[0] == ["B"]


def test_plan_skips_lanes_this_worker_cannot_run():
    s = snap([("C", ["c"], 0)], {})
    assert plan_claim("w1", CATALOG, set(), s, 10) == ([], None)


def test_refusal_names_what_each_worker_has():
    assert refusal([], {}) is None
    assert "no worker is connected" in refusal([["LoadVAE.source", "a"]], {})
    catalogs = {"w1": {"LoadVAE.source": ["a"]}, "w2": {"LoadVAE.source": ["b"]}}
    assert refusal([["LoadVAE.source", "a"]], catalogs) is None
    both = refusal([["LoadVAE.source", "a"], ["LoadVAE.source", "b"]], catalogs)
    assert "no worker has every model" in both and "w1 has ['a']" in both and "w2 has ['b']" in both


def test_catalog_registry_asks_the_workers_for_machine_choices_only():
    reg = NodeRegistry()

    @reg.node(
        "Loader",
        category="t",
        inputs=[
            Input("source", Combo(choices=lambda env: ["local"])),
            Input("image", Combo(choices=lambda env: ["in.png"], image_upload=True)),
            Input("mode", Combo(choices=("x", "y"))),
        ],
        outputs=[Output("INT")],
    )
    def loader(ctx, source, image, mode):
        return (1,)

    wrapped = catalog_registry(reg, lambda key: [f"{key}@workers"])
    info = wrapped.object_info(NodeEnv())["Loader"]["input"]["required"]
    assert info["source"][0] == ["Loader.source@workers"]
    assert info["image"][0] == ["in.png"] and info["image"][1]["image_upload"] is True
    assert info["mode"][0] == ["x", "y"]
    prompt = {"1": {"class_type": "Loader", "inputs": {"source": "m", "image": "in.png", "mode": "x"}}}
    assert requirements(prompt, reg) == [["Loader.source", "m"]]


def test_history_in_pieces_for_a_streamed_response(store, queue):
    for i in range(40):
        store.add(f"s{i}", math_prompt(i), {}, ["2"], None)
    for c in claim_all(queue, "w"):
        queue.finish("w", c, "success", {"2": {"text": [str(c.prompt_id)]}}, [], None, [])
    ids = store.history_page(None)
    assert ids == [f"s{i}" for i in range(40)] and store.history_page(5, 2) == ids[2:7]
    entries, used = store.history_json(ids, budget=1)
    assert used == 32 and len(entries) == 32  # one chunk, then the budget stops it
    pid, text = entries[0]
    assert json.loads(text) == store.get(pid).history_entry()


def test_jobs_list_from_the_shared_state(store, queue):
    wf = {"extra_pnginfo": {"workflow": {"id": "wf-1", "nodes": []}}}
    store.add("j0", math_prompt(0), wf, ["2"], None)
    store.add("j1", math_prompt(1), {}, ["2"], None)
    store.add("j2", math_prompt(2), wf, ["2"], None)
    done = queue.claim("w", queue.lane_ids())
    messages = [["execution_start", {"prompt_id": "j0", "timestamp": 5}]]
    queue.finish("w", done, "success", {}, messages, None, [])
    running = queue.claim("w", queue.lane_ids())
    jobs, total = store.jobs(["pending", "running", "success"])
    assert total == 3 and [j["prompt_id"] for j in jobs] == ["j2", "j1", "j0"]  # newest first
    assert jobs[2]["started_ms"] == 5 and jobs[2]["workflow_id"] == "wf-1"
    assert [j["prompt_id"] for j in store.jobs(["pending", "success"], workflow_id="wf-1")[0]] == ["j2", "j0"]
    page, total = store.jobs(["pending", "running", "success"], descending=False, limit=1, offset=1)
    assert total == 3 and [j["prompt_id"] for j in page] == [running.prompt_id]
