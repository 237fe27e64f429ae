"""Processes die: a worker (kill -9, SIGTERM), the front end (kill -9), Redis (kill -9, then
restarted from its append-only file), and a prompt that kills every worker that runs it."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from tests.distributed.conftest import PREFIX, slow, wait_until
from tests.server.wsclient import done

pytestmark = pytest.mark.slow


def worker_of(cluster, prompt_id: str) -> str:
    return cluster.redis.client().hget(f"{PREFIX}prompt:{prompt_id}", "worker").decode()


def collect(ws, prompt_id: str, timeout: float = 60) -> list[dict]:
    """The prompt's websocket messages up to its final `executing {node: null}`, and any that
    follow within a short while (a second report would show there)."""
    got = [m for m in ws.until(done(prompt_id), timeout) if m["data"].get("prompt_id") == prompt_id]
    try:
        while True:
            m = ws.recv(timeout=1.0)
            if isinstance(m["data"], dict) and m["data"].get("prompt_id") == prompt_id:
                got.append(m)
    except TimeoutError:
        pass
    return got


def test_worker_killed_mid_prompt_is_completed_by_another_and_reported_once(cluster):
    cluster.worker("w1")
    cluster.worker("w2")
    fe = cluster.frontend()
    cluster.wait_workers("w1", "w2")
    client = uuid.uuid4().hex
    ws = fe.ws(client)
    pid = fe.api.queue(slow(40, 0.05, start=1, prefix="survivor"), client)
    fe.api.wait_job(pid, until=("running",))
    wait_until(lambda: (fe.api.get(f"/jobs/{pid}").json().get("step") or 0) >= 5, 30, "progress")
    victim = worker_of(cluster, pid)
    cluster.workers[victim].kill9()
    job = fe.api.wait_job(pid, timeout=60)
    assert job["status"] == "success"
    messages = collect(ws, pid)
    survivor = worker_of(cluster, pid)
    assert survivor != victim
    record = cluster.redis.client().hgetall(f"{PREFIX}prompt:{pid}")
    assert record[b"deliveries"] == b"2" and record[b"previous_worker"].decode() == victim
    ends = ("execution_success", "execution_error", "execution_interrupted")
    finals = [m["type"] for m in messages if m["type"] in ends]
    assert finals == ["execution_success"]
    assert sum(1 for m in messages if done(pid)(m)) == 1
    history = fe.api.get("/history").json()
    assert list(history) == [pid] and history[pid]["status"]["completed"] is True
    assert fe.api.get(f"/view?filename={job['files'][0]['filename']}&subfolder=tests").status == 200

    # A worker stopped gracefully (SIGTERM) gives its prompt back at once: no visibility timeout.
    cluster.worker("w3")
    cluster.wait_workers("w3")
    pid = fe.api.queue(slow(200, 0.02, start=2, prefix="handed-over"), client)
    fe.api.wait_job(pid, until=("running",))
    first = worker_of(cluster, pid)
    stopped_at = time.monotonic()
    assert cluster.workers[first].stop(signal.SIGTERM) == 0
    wait_until(
        lambda: fe.api.get(f"/jobs/{pid}").json()["status"] == "running", 30, "the prompt to run again"
    )
    assert worker_of(cluster, pid) not in (first, victim)
    assert time.monotonic() - stopped_at < 2.0 + 5  # not held for the visibility timeout
    assert fe.api.wait_job(pid, timeout=60)["status"] == "success"
    ws.close()


def test_front_end_killed_and_restarted_queued_prompts_still_run(cluster):
    cluster.worker("w1")
    fe = cluster.frontend()
    cluster.wait_workers("w1")
    ids = [fe.api.queue(slow(5, 0.1, start=i, prefix="orphan")) for i in range(5)]
    fe.api.wait_job(ids[0], until=("running", "success"))
    fe.process.kill9()
    time.sleep(0.5)  # the worker goes on meanwhile
    fe.start()  # same data dir: the same front end on the queue
    jobs = [fe.api.wait_job(pid, timeout=60) for pid in ids]
    assert [j["status"] for j in jobs] == ["success"] * 5
    assert sorted(fe.api.get("/history").json()) == sorted(ids)
    for job in jobs:  # written by the worker while this front end was down: fetched from Redis
        (f,) = job["files"]
        r = fe.api.get(f"/view?filename={f['filename']}&subfolder={f['subfolder']}&type=output")
        assert r.status == 200 and r.body[:8] == b"\x89PNG\r\n\x1a\n"


def test_redis_killed_and_restarted_from_its_aof_loses_nothing(cluster):
    cluster.worker("w1")
    fe = cluster.frontend()
    cluster.wait_workers("w1")
    ids = [fe.api.queue(slow(4, 0.1, start=i, prefix="aof")) for i in range(6)]
    fe.api.wait_job(ids[0], until=("running",))
    cluster.redis.kill()
    r = fe.api.post("/prompt", {"prompt": slow(1, 0.0)})
    assert r.status == 503 and r.json()["error"]["type"] == "queue_unavailable"
    assert "cannot be reached" in r.json()["error"]["message"]
    time.sleep(1.0)  # the running prompt finishes meanwhile; its result waits for Redis
    cluster.redis.start()
    jobs = [fe.api.wait_job(pid, timeout=60) for pid in ids]
    assert [j["status"] for j in jobs] == ["success"] * 6
    history = cluster.redis.client().zrange(f"{PREFIX}history", 0, -1)
    assert sorted(h.decode() for h in history) == sorted(ids)
    assert fe.api.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_poison_prompt_is_dead_lettered_after_max_deliveries(cluster):
    cluster.worker("w1")
    cluster.worker("w2")
    fe = cluster.frontend()
    cluster.wait_workers("w1", "w2")
    client = uuid.uuid4().hex
    ws = fe.ws(client)
    poison = {
        "1": {"class_type": "SlowCount", "inputs": {"steps": 2, "delay": 0.05, "start": 1}},
        "2": {"class_type": "Poison", "inputs": {"value": ["1", 0], "code": 3}, "_meta": {"title": "Bad"}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
    }
    pid = fe.api.queue(poison, client)
    job = fe.api.wait_job(pid, timeout=90)
    assert job["status"] == "error"
    error = job["error"]
    assert error["exception_type"] == "DeadLettered"
    assert error["node_id"] == "2" and error["node_type"] == "Poison" and error["node_title"] == "Bad"
    assert "dead-lettered after 2 deliveries" in error["exception_message"]
    assert "--max-deliveries" in error["exception_message"]
    # Both workers died running it (os._exit(3)); the front end's janitor recorded the failure.
    for name in ("w1", "w2"):
        wait_until(lambda name=name: not cluster.workers[name].alive(), 10, f"{name} to die")
        assert cluster.workers[name].proc.returncode == 3
    dead = cluster.redis.client().xrange(f"{PREFIX}dead")
    assert [e[1][b"p"].decode() for e in dead] == [pid]
    messages = collect(ws, pid)
    assert [m["type"] for m in messages if m["type"] == "execution_error"] == ["execution_error"]
    hist = fe.api.get(f"/history/{pid}").json()[pid]
    assert hist["status"]["status_str"] == "error"
    ws.close()
