"""Persistence across process deaths, with `fluxloom serve` as a real subprocess: after kill -9
the pending prompts run and the one that was running is reported as failed; after SIGTERM the
running prompt goes back to the queue and completes on the next start."""

from __future__ import annotations

import os
import signal

import pytest

from server.store import STOPPED_MESSAGE
from tests.server.conftest import slow_prompt
from tests.server.serve_process import ServeProcess, shared_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Shared by the tests here: the first start writes the demo model into it."""
    return shared_models(tmp_path_factory)


@pytest.fixture
def dirs(tmp_path, models):
    return tmp_path / "data", models, tmp_path / "serve.log"


def test_kill_9_then_restart_runs_pending_and_fails_running(dirs):
    data, models, log = dirs
    srv = ServeProcess(data, models, log)
    running = srv.api.queue(slow_prompt(steps=5000, delay=0.01))
    srv.api.wait_job(running, until=("running",))
    pending = [srv.api.queue(slow_prompt(steps=1, start=i, prefix="after")) for i in range(3)]
    first = srv.api.queue(slow_prompt(steps=1, start=99, prefix="front"), front=True)
    os.kill(srv.proc.pid, signal.SIGKILL)
    assert srv.wait() == -signal.SIGKILL

    srv = ServeProcess(data, models, log)
    try:
        job = srv.api.get(f"/jobs/{running}").json()
        assert job["status"] == "error" and job["error"]["exception_message"] == STOPPED_MESSAGE
        hist = srv.api.get(f"/history/{running}").json()[running]
        assert hist["status"]["status_str"] == "error"
        assert hist["status"]["messages"][0][1]["exception_message"] == STOPPED_MESSAGE
        done = [srv.api.wait_job(pid) for pid in [first, *pending]]
        assert [j["status"] for j in done] == ["success"] * 4
        assert [os.path.basename(j["files"][0]["path"]).split("_")[:2] for j in done] == [
            ["front", "100"],
            ["after", "1"],
            ["after", "2"],
            ["after", "3"],
        ]
        assert all(os.path.isfile(j["files"][0]["path"]) for j in done)
        # History order is finish order: the failed one first, then the front prompt.
        assert list(srv.api.get("/history").json()) == [running, first, *pending]
        # `fluxloom serve` attaches the model manager: its state shows in /system_stats.
        stats = srv.api.get("/system_stats").json()
        assert {"device", "loaded"} <= set(stats["fluxloom"])
        assert srv.api.post("/free", {"unload_models": True, "free_memory": True}).status == 200
    finally:
        srv.proc.send_signal(signal.SIGINT)
        assert srv.wait() == 0


def test_sigterm_requeues_the_running_prompt(dirs):
    data, models, log = dirs
    srv = ServeProcess(data, models, log)
    running = srv.api.queue(slow_prompt(steps=150, delay=0.02, start=1, prefix="requeued"))
    srv.api.wait_job(running, until=("running",))
    behind = srv.api.queue(slow_prompt(steps=1, start=5, prefix="behind"))
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait() == 0  # graceful

    srv = ServeProcess(data, models, log)
    try:
        assert srv.api.get(f"/jobs/{running}").json()["status"] in ("pending", "running")
        assert srv.api.wait_job(running)["status"] == "success"
        assert srv.api.wait_job(behind)["status"] == "success"
        assert list(srv.api.get("/history").json()) == [running, behind]
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait() == 0
