"""Saved workflows: listing shipped + user ones, read-only shipped ones, PUT/GET/DELETE, queueing
by name with overrides by node id and by title, and `fluxloom queue` from a shell."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import server.workflow_io as workflow_io
from tests.server.conftest import math_prompt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ui_workflow(steps: int = 2, start: int = 10, prefix: str = "wf") -> dict:
    """SlowCount ("Counter") → SaveTestImage ("Save"), in the UI format the canvas saves."""
    return {
        "last_node_id": 2,
        "last_link_id": 1,
        "nodes": [
            {
                "id": 1,
                "type": "SlowCount",
                "title": "Counter",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "count", "type": "INT", "links": [1]}],
                "widgets_values": [steps, 0.0, start],
            },
            {
                "id": 2,
                "type": "SaveTestImage",
                "title": "Save",
                "mode": 0,
                "inputs": [{"name": "value", "type": "INT", "link": 1}],
                "outputs": [],
                "widgets_values": [prefix],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "INT"]],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped workflows folder of our own (the repo's may not exist yet)."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "starter.json").write_text(json.dumps(ui_workflow(prefix="starter")))
    (folder / "starter.api.json").write_text(json.dumps(math_prompt(1)))  # an API twin: not listed
    monkeypatch.setattr(workflow_io, "WORKFLOWS_DIR", folder)
    return folder


def test_list_get_put_delete(shipped, api):
    listed = api.get("/workflows").json()["workflows"]
    assert [(w["name"], w["source"], w["read_only"], w["format"]) for w in listed] == [
        ("starter", "shipped", True, "ui")
    ]
    assert api.get("/workflows/starter").json() == ui_workflow(prefix="starter")

    mine = ui_workflow(start=100, prefix="mine")
    r = api.request("PUT", "/workflows/my%20flow", mine)
    assert r.status == 200 and r.json()["source"] == "user"
    assert api.get("/workflows/my%20flow").json() == mine  # the UI JSON as stored
    assert api.get("/api/workflows/my%20flow.json").json() == mine
    r = api.request("PUT", "/workflows/api-one", math_prompt(4))
    assert r.status == 200
    names = {w["name"]: w for w in api.get("/workflows").json()["workflows"]}
    assert set(names) == {"starter", "my flow", "api-one"}
    assert names["api-one"]["format"] == "api" and not names["my flow"]["read_only"]

    # Shipped workflows are read-only.
    assert api.request("PUT", "/workflows/starter", mine).status == 403
    assert api.request("DELETE", "/workflows/starter").status == 403
    assert api.get("/workflows/starter").json() == ui_workflow(prefix="starter")
    # Names cannot leave the folder; bodies must be workflows.
    for bad in ("..", ".hidden", "a%2Fb", "a%00b"):
        assert api.request("PUT", f"/workflows/{bad}", mine).status in (400, 404), bad
    assert api.request("PUT", "/workflows/empty", {}).status == 400
    assert api.request("PUT", "/workflows/list", raw=b"[1, 2]").status == 400

    assert api.request("DELETE", "/workflows/my%20flow").json() == {"deleted": "my flow"}
    assert api.get("/workflows/my%20flow").status == 404
    assert api.request("DELETE", "/workflows/my%20flow").status == 404


def test_queue_saved_workflow_with_overrides(shipped, server, api):
    api.request("PUT", "/workflows/mine", ui_workflow(start=100, prefix="mine"))
    # By node id.
    r = api.post("/workflows/mine/queue", {"set": {"1.start": 5}})
    assert r.status == 200
    job = api.wait_job(r.json()["prompt_id"])
    assert job["outputs"]["2"]["images"][0]["filename"].startswith("mine_7_")  # 5 + 2 steps
    # By title, several inputs, on a shipped workflow.
    r = api.post(
        "/workflows/starter/queue",
        {"set": {"Counter.steps": 3, "Counter.start": 20, "Save.filename_prefix": "t"}},
    )
    pid = r.json()["prompt_id"]
    job = api.wait_job(pid)
    assert job["outputs"]["2"]["images"][0]["filename"].startswith("t_23_")
    # The UI workflow travels in extra_pnginfo, as the canvas sends it.
    hist = api.get(f"/history/{pid}").json()[pid]
    assert hist["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"][0]["title"] == "Counter"
    assert hist["prompt"][2]["1"]["inputs"] == {"steps": 3, "delay": 0.0, "start": 20}
    # An API-format saved workflow queues too.
    api.request("PUT", "/workflows/api-one", math_prompt(4))
    job = api.wait_job(api.post("/workflows/api-one/queue", {"set": {"1.b": 10}}).json()["prompt_id"])
    assert job["outputs"] == {"2": {"text": ["14"]}}

    r = api.post("/workflows/mine/queue", {"set": {"Nobody.start": 1}})
    assert r.status == 400 and "no node has id or title 'Nobody'" in r.json()["error"]["message"]
    r = api.post("/workflows/mine/queue", {"set": {"1.stpes": 3}})  # a typo must not be ignored
    assert r.status == 400 and "stpes" in r.json()["error"]["message"]
    r = api.post("/workflows/mine/queue", {"set": {"1.steps": 0}})
    assert r.status == 400 and r.json()["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert api.post("/workflows/missing/queue", {}).status == 404


def test_post_prompt_accepts_a_ui_workflow(api):
    r = api.post("/prompt", {"prompt": ui_workflow(start=1, prefix="ui"), "set": {"Counter.steps": 4}})
    assert r.status == 200
    job = api.wait_job(r.json()["prompt_id"])
    assert job["outputs"]["2"]["images"][0]["filename"].startswith("ui_5_")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "queue", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fluxloom_queue_cli(shipped, server, api, tmp_path):
    api.request("PUT", "/workflows/mine", ui_workflow(start=100, prefix="cli"))
    run = _cli("mine", "--server", server.url, "--set", "Counter.start=30", "--set", "1.steps=2", "--wait")
    assert run.returncode == 0, run.stderr
    path, url = run.stdout.strip().split("\t")
    assert os.path.basename(path).startswith("cli_32_") and os.path.isfile(path)
    assert url.startswith(server.url + "/view?filename=cli_32_")
    assert api.get(url[len(server.url) :]).body[:4] == b"\x89PNG"
    assert "step 2/2" in run.stderr

    # A workflow file is converted on the server; without --wait the prompt id is printed.
    wf = tmp_path / "flow.json"
    wf.write_text(json.dumps(ui_workflow(start=1, prefix="file")))
    run = _cli(str(wf), "--server", server.url, "--set", "Save.filename_prefix=fromfile")
    assert run.returncode == 0, run.stderr
    job = api.wait_job(run.stdout.strip())
    assert job["outputs"]["2"]["images"][0]["filename"].startswith("fromfile_3_")

    run = _cli("mine", "--server", server.url, "--set", "1.steps=-1", "--wait")
    assert run.returncode == 2 and "value_smaller_than_min" in run.stderr
    run = _cli("nothing-here", "--server", server.url)
    assert run.returncode == 2 and "no workflow 'nothing-here'" in run.stderr
    run = _cli("mine", "--server", "http://127.0.0.1:9")
    assert run.returncode == 1 and "cannot reach the server" in run.stderr


def test_queue_cli_reports_a_job_the_server_no_longer_has(server, api):
    import aiohttp

    from server.client import EXIT_FAILED, ClientError, _job

    async def get_job(prompt_id: str) -> dict:
        async with aiohttp.ClientSession() as session:
            return await _job(session, server.url, prompt_id)

    def fetch(prompt_id: str) -> dict:
        # On its own thread: another test in the session may have left this thread's loop running.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, get_job(prompt_id)).result(30)

    pid = api.queue(math_prompt(2))
    assert fetch(pid)["status"] == "success"
    assert api.post("/history", {"clear": True}).json() == {"deleted": 1}
    with pytest.raises(ClientError) as err:
        fetch(pid)
    assert err.value.code == EXIT_FAILED
    assert f"job {pid}: server answered 404" in str(err.value) and "no job" in str(err.value)
