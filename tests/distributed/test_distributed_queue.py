"""One Redis, one `fluxloom serve --queue` front end and three `fluxloom worker` processes,
shared by the tests of this module (none of them kills a process)."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from PIL import Image

from tests.distributed.conftest import PREFIX, Cluster, slow, wait_until
from tests.server.test_server_comfy_client import ComfyStyleClient
from tests.server.wsclient import WSClient, done

pytestmark = pytest.mark.slow

WORKERS = ("w1", "w2", "w3")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, demo_models):
    c = Cluster(tmp_path_factory.mktemp("cluster"), demo_models, ["--max-output-bytes", "64K"])
    try:
        for name in WORKERS:
            c.worker(name)
        c.frontend("fe")
        c.wait_workers(*WORKERS)
        yield c
    finally:
        c.close()


@pytest.fixture
def api(shared):
    return shared.frontends[0].api


def worker_of(shared: Cluster, prompt_id: str) -> str:
    return shared.redis.client().hget(f"{PREFIX}prompt:{prompt_id}", "worker").decode()


def test_twenty_prompts_three_workers_each_exactly_once(shared, api):
    client_id = uuid.uuid4().hex
    ws = shared.frontends[0].ws(client_id)
    before = {n: shared.advert(n)["prompts_run"] for n in WORKERS}
    ids = [api.queue(slow(2, 0.1, start=i, prefix="twenty"), client_id) for i in range(20)]
    finals: dict[str, list[str]] = {pid: [] for pid in ids}
    pending = set(ids)
    while pending:
        msg = ws.recv(timeout=60)
        pid = msg["data"].get("prompt_id") if isinstance(msg["data"], dict) else None
        if pid in finals and msg["type"] in ("execution_success", "execution_error"):
            finals[pid].append(msg["type"])
        if pid in pending and done(pid)(msg):
            pending.discard(pid)
    ws.close()
    assert all(f == ["execution_success"] for f in finals.values()), finals
    jobs = [api.wait_job(pid) for pid in ids]
    assert [j["status"] for j in jobs] == ["success"] * 20
    history = api.get("/history").json()
    assert all(history[pid]["status"]["status_str"] == "success" for pid in ids)
    order = [m.decode() for m in shared.redis.client().zrange(f"{PREFIX}history", 0, -1)]
    assert sorted(p for p in order if p in finals) == sorted(ids)  # once each
    # Each ran once: the workers ran twenty prompts between them, and the three took part.
    wait_until(lambda: sum(shared.advert(n)["prompts_run"] - before[n] for n in WORKERS) == 20, 10, "adverts")
    assert len({worker_of(shared, pid) for pid in ids}) == 3
    # The images travelled back: each one is on the front end's disk and served by /view.
    for job in jobs:
        (f,) = job["files"]
        assert api.get(f"/view?filename={f['filename']}&subfolder={f['subfolder']}&type=output").status == 200


def test_comfyui_api_client_works_unchanged(shared):
    """tests/server/test_server_comfy_client.py's client, against a distributed front end."""
    fe = shared.frontends[0]
    client = ComfyStyleClient(f"127.0.0.1:{fe.port}")
    prompt = {
        "3": {"class_type": "SlowCount", "inputs": {"steps": 4, "delay": 0.0, "start": 100}},
        "9": {"class_type": "SaveTestImage", "inputs": {"filename_prefix": "ComfyUI", "value": ["3", 0]}},
    }
    ws = WSClient(f"ws://{client.server_address}/ws?clientId={client.client_id}")
    images = client.get_images(ws, prompt)
    ws.close()
    assert list(images) == ["9"] and len(images["9"]) == 1
    with Image.open(io.BytesIO(images["9"][0])) as img:
        assert img.size == (8, 8) and img.getpixel((0, 0)) == 104


def test_interrupt_reaches_the_worker_running_the_prompt(shared, api):
    first = api.queue(slow(500, 0.01, prefix="long-a"))
    second = api.queue(slow(150, 0.01, prefix="long-b"))
    api.wait_job(first, until=("running",))
    api.wait_job(second, until=("running",))
    assert worker_of(shared, first) != worker_of(shared, second)
    running = api.get(f"/jobs/{first}").json()
    assert running["status"] == "running"
    wait_until(lambda: api.get(f"/jobs/{first}").json().get("steps") == 500, 10, "progress in /jobs")
    assert api.post("/interrupt", {"prompt_id": first}).json() == {"interrupted": True}
    assert api.wait_job(first)["status"] == "interrupted"
    assert api.wait_job(second)["status"] == "success"  # the other worker's prompt went on
    assert api.post("/interrupt", {"prompt_id": first}).json() == {"interrupted": False}


def test_queue_delete_and_clear_remove_pending_prompts(shared, api):
    busy = [api.queue(slow(300, 0.01, prefix="busy")) for _ in WORKERS]
    for pid in busy:
        api.wait_job(pid, until=("running",))
    waiting = [api.queue(slow(1, 0.0, start=i, prefix="waiting")) for i in range(4)]
    queue = api.get("/queue").json()
    assert [item[1] for item in queue["queue_pending"]] == waiting
    assert sorted(item[1] for item in queue["queue_running"]) == sorted(busy)
    assert api.get(f"/jobs/{waiting[2]}").json()["position"] == 2
    assert api.post("/queue", {"delete": [waiting[0], busy[0]]}).json() == {"deleted": 1}
    assert api.post("/queue", {"clear": True}).json() == {"deleted": 3}
    assert api.get("/queue").json()["queue_pending"] == []
    for pid in busy:
        api.post("/interrupt", {"prompt_id": pid})
    for pid in busy:
        assert api.wait_job(pid)["status"] == "interrupted"
    for pid in waiting:
        assert api.get(f"/jobs/{pid}").status == 404
    assert api.get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_system_stats_lists_the_workers(shared, api):
    stats = api.get("/system_stats").json()["fluxloom"]
    assert stats["mode"] == "distributed" and stats["device"] == "3 workers"
    assert sorted(w["name"] for w in stats["workers"]) == list(WORKERS)
    assert all(w["installed"] == ["fluxloom-demo"] and w["demo_only"] for w in stats["workers"])
    assert stats["demo_only"] is True


def test_demo_only_workers_run_a_workflow_naming_another_model(shared, api):
    """As the embedded server on a fresh machine: a model no worker has is pointed at the demo."""
    prompt = {
        "1": {"class_type": "LoadVAE", "inputs": {"source": "FLUX.1-dev", "dtype": "auto"}},
        "2": {"class_type": "EmptyLatent16ch", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 0], "latent": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    r = api.post("/prompt", {"prompt": prompt})
    assert r.status == 200, r.body
    assert "using the demo model fluxloom-demo" in r.json()["warnings"][0]
    job = api.wait_job(r.json()["prompt_id"], timeout=120)
    assert job["status"] == "success", job["error"]
    (f,) = job["files"]
    assert f["type"] == "temp" and api.get(f"/view?filename={f['filename']}&type=temp").status == 200
    info = api.get("/object_info/LoadVAE").json()["LoadVAE"]
    assert info["input"]["required"]["source"][0] == ["fluxloom-demo"]  # the workers' models


def test_uploaded_input_image_travels_to_the_worker(shared, api):
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 10, 30)).save(buf, "PNG")
    boundary = "fluxloomboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="red.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + buf.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = api.request("POST", "/upload/image", raw=body, headers=headers)
    assert r.status == 200, r.body
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": r.json()["name"]}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    job = api.wait_job(api.queue(prompt), timeout=60)
    assert job["status"] == "success", job["error"]
    (f,) = job["files"]
    png = api.get(f"/view?filename={f['filename']}&type=temp").body
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (24, 16) and img.convert("RGB").getpixel((3, 3)) == (200, 10, 30)


def test_outputs_over_the_bound_fail_naming_the_setting(shared, api):
    prompt = {
        "1": {"class_type": "SlowCount", "inputs": {"steps": 1, "delay": 0.0, "start": 5}},
        "2": {"class_type": "BigImage", "inputs": {"value": ["1", 0], "kib": 256}},
    }
    job = api.wait_job(api.queue(prompt), timeout=60)
    assert job["status"] == "error"
    error = job["error"]
    assert error["exception_type"] == "OutputTooLarge" and error["node_id"] == "2"
    assert "--max-output-bytes" in error["exception_message"] and "64.0 MiB" not in error["exception_message"]
    history = api.get(f"/history/{job['prompt_id']}").json()[job["prompt_id"]]
    assert history["status"]["status_str"] == "error"
    assert json.dumps(history["status"]["messages"]).count("execution_success") == 0


def test_free_reaches_every_worker(shared, api):
    prompt = {
        "1": {"class_type": "LoadVAE", "inputs": {"source": "fluxloom-demo", "dtype": "auto"}},
        "2": {"class_type": "EmptyLatent16ch", "inputs": {"width": 32, "height": 16, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 0], "latent": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    pid = api.queue(prompt)
    assert api.wait_job(pid, timeout=120)["status"] == "success"
    ran_on = worker_of(shared, pid)
    wait_until(lambda: shared.advert(ran_on).get("loaded") == ["fluxloom-demo"], 20, "the advert")
    assert api.post("/free", {"unload_models": True}).status == 200
    freed = lambda: all(shared.advert(n).get("loaded", ["?"]) == [] for n in WORKERS)  # noqa: E731
    wait_until(freed, 20, "every worker to free")
