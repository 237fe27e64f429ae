"""A prompt's whole life over real sockets: websocket messages in ComfyUI's order, history,
/view, /jobs, and a re-queue answered from the cache."""

from __future__ import annotations

from tests.server.conftest import client_id, slow_prompt
from tests.server.wsclient import done


def test_full_lifecycle_message_sequence(server, api):
    cid = client_id()
    ws = server.ws(cid)
    first = ws.recv()
    assert first["type"] == "status"
    assert first["data"]["sid"] == cid
    assert first["data"]["status"]["exec_info"]["queue_remaining"] == 0

    other = server.ws(client_id())  # another browser tab: gets status, not this prompt's messages
    assert other.recv()["type"] == "status"

    pid = api.queue(slow_prompt(steps=3, start=40), client_id=cid)
    msgs = ws.until(done(pid))
    types = [m["type"] for m in msgs]
    execution = [m for m in msgs if m["type"] != "status"]
    assert [m["type"] for m in execution] == [
        "execution_start",
        "execution_cached",
        "executing",
        "progress",
        "progress",
        "progress",
        "executing",
        "executed",
        "execution_success",
        "executing",
    ]
    assert "status" in types  # the queue changed
    assert all(m["data"]["prompt_id"] == pid for m in execution)
    assert execution[1]["data"]["nodes"] == []
    assert execution[2]["data"]["node"] == "1"
    assert [(m["data"]["value"], m["data"]["max"], m["data"]["node"]) for m in execution[3:6]] == [
        (1, 3, "1"),
        (2, 3, "1"),
        (3, 3, "1"),
    ]
    assert execution[6]["data"]["node"] == "2"
    image = execution[7]["data"]["output"]["images"][0]
    assert execution[7]["data"]["node"] == "2"
    assert image["type"] == "output" and image["subfolder"] == "tests"
    assert execution[-1]["data"]["node"] is None

    hist = api.get(f"/history/{pid}").json()[pid]
    assert hist["status"] == {
        "status_str": "success",
        "completed": True,
        "messages": hist["status"]["messages"],
    }
    assert [m[0] for m in hist["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert hist["outputs"]["2"]["images"] == [image]
    assert hist["prompt"][1] == pid and hist["prompt"][4] == ["2"]
    assert hist["prompt"][3]["client_id"] == cid

    view = api.get(f"/view?filename={image['filename']}&subfolder=tests&type=output")
    assert view.status == 200 and view.body[:8] == b"\x89PNG\r\n\x1a\n"

    job = api.get(f"/jobs/{pid}").json()
    assert job["status"] == "success" and job["outputs"]["2"]["images"] == [image]
    assert job["files"][0]["path"].endswith(f"tests/{image['filename']}")

    # The other client saw only status messages.
    seen = []
    try:
        while True:
            seen.append(other.recv(timeout=0.3)["type"])
    except TimeoutError:
        pass
    assert seen and set(seen) == {"status"}
    ws.close()
    other.close()


def test_identical_requeue_is_answered_from_cache(server, api):
    cid = client_id()
    ws = server.ws(cid)
    ws.recv()
    prompt = slow_prompt(steps=2, start=7)
    first = api.queue(prompt, client_id=cid)
    ws.until(done(first))
    second = api.queue(prompt, client_id=cid)
    msgs = [m for m in ws.until(done(second)) if m["type"] != "status"]
    assert [m["type"] for m in msgs] == [
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "executing",
    ]
    assert sorted(msgs[1]["data"]["nodes"]) == ["1", "2"]  # every node came from the cache
    assert msgs[2]["data"]["output"]["images"][0]["filename"].startswith("test_9_")
    assert (
        api.get(f"/history/{second}")
        .json()[second]["outputs"]["2"]["images"][0]["filename"]
        .startswith("test_9")
    )
    ws.close()


def test_jobs_answers_while_pending_and_running(server, api):
    slow = api.queue(slow_prompt(steps=400, delay=0.01))
    behind = api.queue(slow_prompt(steps=1, start=3))
    assert api.get(f"/jobs/{behind}").json() == {
        "prompt_id": behind,
        "number": 2,
        "status": "pending",
        "position": 0,
    }
    job = api.wait_job(slow, until=("running",))
    deadline_job = job
    for _ in range(200):  # wait for a progress report to land in the job
        deadline_job = api.get(f"/jobs/{slow}").json()
        if deadline_job.get("step", 0) > 0:
            break
    assert deadline_job["status"] == "running"
    assert deadline_job["node"] == "1" and deadline_job["node_type"] == "SlowCount"
    assert deadline_job["node_title"] == "Counter"
    assert 0 < deadline_job["step"] <= deadline_job["steps"] == 400
    # The event loop keeps serving while the worker runs the long node.
    queue = api.get("/queue").json()
    assert [item[1] for item in queue["queue_running"]] == [slow]
    assert [item[1] for item in queue["queue_pending"]] == [behind]
    assert api.post("/interrupt").json() == {"interrupted": True}
    assert api.wait_job(slow)["status"] == "interrupted"
    assert api.wait_job(behind)["status"] == "success"
    assert api.get("/jobs/nope").status == 404


def test_jobs_lists_files_of_loosely_written_outputs(server, api):
    pid = api.queue({"1": {"class_type": "OddImages", "inputs": {"value": 4}}})
    job = api.wait_job(pid)
    assert job["status"] == "success"
    out = server.runtime.env.output_dir.resolve()
    assert job["files"] == [
        {"filename": "odd_4.png", "subfolder": "", "type": "output", "path": str(out / "odd_4.png")}
    ]
