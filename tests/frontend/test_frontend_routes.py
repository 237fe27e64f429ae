"""The routes the official ComfyUI frontend calls, against a real in-process server over real
sockets: each answer's shape against what the frontend's schemas require (recorded from its
1.58.1 sources, and checked against the installed package's own), and the behaviour behind it —
jobs from the SQLite queue, settings and userdata in the data dir (userdata `workflows/` is the
saved-workflows store), templates from the shipped workflows, custom nodes' web directories."""

from __future__ import annotations

import io
import json
import struct
import threading

import pytest

from server.frontend import (
    COMFYUI_VERSION,
    FRONTEND,
    FrontendNotInstalled,
    comfyui_static_dir,
    web_directories,
)
from server.workflow_io import shipped_workflows
from tests.frontend import frontend_schemas as schemas
from tests.frontend import web_nodes
from tests.server.conftest import Api, ServerThread, math_prompt, slow_prompt
from tests.server.wsclient import WSClient

JOBS_SOURCE = "src/platform/remote/comfyui/jobs/jobTypes.ts"


@pytest.fixture
def srv(tmp_path):
    server = ServerThread(tmp_path / "data")
    server.app[FRONTEND].extension_dirs.update(web_directories([web_nodes.__name__]))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(srv) -> Api:
    return Api(srv.url)


def explode_prompt() -> dict:
    return {
        "1": {"class_type": "IntegerMath", "inputs": {"a": 1, "b": 1, "operation": "add"}},
        "2": {"class_type": "Explode", "inputs": {"value": ["1", 0], "message": "kaboom"}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
    }


def test_recorded_schemas_match_the_installed_frontend():
    """The shapes below were read from 1.58.1; the installed package must still require them."""
    static = comfyui_static_dir()
    for const, recorded in (
        ("zRawJobListItem", schemas.JOB),
        ("zExecutionError", schemas.EXECUTION_ERROR),
        ("zPreviewOutput", schemas.PREVIEW_OUTPUT),
        ("zPaginationInfo", schemas.JOBS_LIST["pagination"][0]),
    ):
        real = schemas.zod_object_fields(static, JOBS_SOURCE, const)
        required = {name for name, is_required in real.items() if is_required}
        assert required == {n for n, (_, req, _) in recorded.items() if req}, const
        assert set(recorded) <= set(real), const


def test_jobs_list_filters_sorts_pages_in_the_frontends_shape(srv, api):
    ok = [api.queue(slow_prompt(steps=1, delay=0, start=i)) for i in range(3)]
    failed = api.queue(explode_prompt())
    for pid in [*ok, failed]:
        api.wait_job(pid)
    blocker = api.queue(slow_prompt(steps=200, delay=0.02, prefix="blocker"))
    api.wait_job(blocker, until=("running",))
    pending = api.queue(math_prompt(5))

    listing = api.get("/api/jobs").json()
    assert schemas.check(listing, schemas.JOBS_LIST) == []
    jobs = {j["id"]: j for j in listing["jobs"]}
    assert [j["id"] for j in listing["jobs"]] == [pending, blocker, failed, *reversed(ok)]  # newest first
    assert jobs[pending]["status"] == "pending" and jobs[blocker]["status"] == "in_progress"
    assert jobs[ok[0]]["status"] == "completed" and jobs[failed]["status"] == "failed"
    assert jobs[ok[0]]["outputs_count"] == 1 == jobs[ok[0]]["previewable_outputs_count"]
    preview = jobs[ok[0]]["preview_output"]
    assert preview["nodeId"] == "2" and preview["mediaType"] == "images" and preview["type"] == "output"
    assert api.get(f"/view?filename={preview['filename']}&subfolder=tests&type=output").status == 200
    assert (
        jobs[ok[0]]["execution_end_time"] >= jobs[ok[0]]["execution_start_time"] >= jobs[ok[0]]["create_time"]
    )
    error = jobs[failed]["execution_error"]
    assert (
        error["exception_message"] == "kaboom" and error["node_id"] == "2" and error["node_type"] == "Explode"
    )

    # ComfyUI's status filter, sort and pagination (the frontend's queue and history calls).
    queue = api.get("/api/jobs?status=in_progress,pending&limit=200&offset=0").json()
    assert [j["id"] for j in queue["jobs"]] == [pending, blocker]
    history = api.get("/api/jobs?status=completed,failed,cancelled&limit=2&offset=1").json()
    assert [j["id"] for j in history["jobs"]] == [ok[2], ok[1]]
    assert history["pagination"] == {"offset": 1, "limit": 2, "total": 4, "has_more": True}
    oldest = api.get("/api/jobs?status=completed&sort_order=asc&limit=1").json()
    assert [j["id"] for j in oldest["jobs"]] == [ok[0]] and oldest["pagination"]["has_more"] is True
    by_duration = api.get("/api/jobs?status=completed,failed&sort_by=execution_duration").json()
    assert {j["id"] for j in by_duration["jobs"]} == {*ok, failed}
    for bad in ("status=done", "sort_by=name", "sort_order=up", "limit=0", "limit=x", "offset=y"):
        r = api.get(f"/api/jobs?{bad}")
        assert r.status == 400 and r.json()["error"], bad

    # Cancel: a pending job leaves the queue, the running one is interrupted, a finished one is a no-op.
    assert api.post(f"/api/jobs/{ok[0]}/cancel").json() == {"cancelled": False}
    assert api.post("/api/jobs/cancel", {"job_ids": [pending, "nope"]}).json() == {"cancelled": True}
    assert api.post(f"/api/jobs/{blocker}/cancel").json() == {"cancelled": True}
    assert api.wait_job(blocker)["status"] == "interrupted"
    assert api.get(f"/api/jobs/{blocker}").json()["status"] == "cancelled"
    assert api.get(f"/api/jobs/{pending}").status == 404
    assert api.post("/api/jobs/cancel", {"job_ids": "x"}).status == 400


def test_job_detail_carries_the_workflow_and_outputs(srv, api):
    workflow = {"id": "wf-1", "nodes": [], "links": []}  # what the frontend sends in extra_pnginfo
    pid = api.queue(slow_prompt(steps=1, delay=0), extra_data={"extra_pnginfo": {"workflow": workflow}})
    api.wait_job(pid)
    job = api.get(f"/api/jobs/{pid}").json()
    assert schemas.check(job, schemas.JOB_DETAIL) == []
    assert job["workflow"]["prompt"] == slow_prompt(steps=1, delay=0)
    assert job["workflow"]["extra_data"]["extra_pnginfo"]["workflow"] == workflow
    assert job["workflow_id"] == "wf-1" and job["outputs"]["2"]["images"][0]["type"] == "output"
    assert job["execution_status"]["status_str"] == "completed"
    assert [j["id"] for j in api.get("/api/jobs?workflow_id=wf-1").json()["jobs"]] == [pid]
    assert api.get("/api/jobs?workflow_id=other").json()["jobs"] == []
    r = api.get("/api/jobs/unknown-id")
    assert r.status == 404 and r.json() == {"error": "Job not found"}
    # fluxloom's own /jobs/{id} keeps its shape (ComfyUI has no route there).
    assert api.get(f"/jobs/{pid}").json()["status"] == "success"


def test_a_prompt_lost_in_a_crash_is_a_valid_failed_job(tmp_path):
    data = tmp_path / "data"
    first = ServerThread(data).start()
    pid = Api(first.url).queue(slow_prompt(steps=1, delay=0))
    Api(first.url).wait_job(pid)
    first.stop()
    from server.store import PromptStore

    store = PromptStore(data / "queue.sqlite3")  # a prompt left running, as after kill -9
    store.add("lost", slow_prompt(), {}, ["2"], None)
    store.claim_next()
    store.close()
    second = ServerThread(data).start()
    try:
        job = next(j for j in Api(second.url).get("/api/jobs").json()["jobs"] if j["id"] == "lost")
        assert job["status"] == "failed" and schemas.check(job, schemas.JOB) == []
        assert (
            job["execution_error"]["node_id"] == ""
            and "stopped" in job["execution_error"]["exception_message"]
        )
    finally:
        second.stop()


def test_settings_are_stored_per_user_in_the_data_dir(srv, api, tmp_path):
    assert api.get("/api/settings").json() == {}
    assert api.get("/api/users").json() == {"storage": "server", "migrated": True}
    assert api.post("/api/settings/Comfy.LinkRenderMode", 2).status == 200
    assert api.post("/api/settings", {"Comfy.Sidebar.Size": "small", "Comfy.Locale": "en"}).status == 200
    assert api.get("/api/settings/Comfy.LinkRenderMode").json() == 2
    assert api.get("/settings/Comfy.Nope").json() is None
    # The frontend posts settings one by one and several at once: none may be lost.
    threads = [
        threading.Thread(target=api.post, args=(f"/api/settings/Test.Setting{i}", i)) for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = json.loads((tmp_path / "data" / "user" / "default" / "comfy.settings.json").read_text())
    assert stored == api.get("/api/settings").json()
    assert {f"Test.Setting{i}": i for i in range(12)}.items() <= stored.items()
    assert stored["Comfy.Sidebar.Size"] == "small" and stored["Comfy.LinkRenderMode"] == 2
    assert api.post("/api/settings", [1, 2]).status == 400


def test_userdata_workflows_are_fluxloom_saved_workflows(srv, api, tmp_path):
    ui = json.loads(next(iter(shipped_workflows().values())).read_text())
    # Saved from the official frontend (Ctrl+S): listed and queueable by GET /workflows.
    r = api.request(
        "POST",
        "/api/userdata/workflows%2Fmine.json?overwrite=false&full_info=true",
        raw=json.dumps(ui).encode(),
    )
    assert r.status == 200 and schemas.check(r.json(), schemas.USERDATA_FULL_INFO) == []
    assert r.json()["path"] == "workflows/mine.json"
    assert (tmp_path / "data" / "workflows" / "mine.json").is_file()
    names = {w["name"]: w for w in api.get("/workflows").json()["workflows"]}
    assert names["mine"]["source"] == "user" and names["mine"]["format"] == "ui"
    assert api.get("/workflows/mine").json() == ui
    # ...and the other way: PUT /workflows shows up in the frontend's workflow browser.
    assert (
        api.request("PUT", "/workflows/theirs", {"1": {"class_type": "Text", "inputs": {"text": "x"}}}).status
        == 200
    )
    listing = api.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true").json()
    assert schemas.check(listing, [schemas.USERDATA_FULL_INFO]) == []
    assert sorted(f["path"] for f in listing) == ["mine.json", "theirs.json"]
    assert api.get("/api/userdata?dir=workflows").json() == ["mine.json", "theirs.json"]
    assert api.get("/api/userdata?dir=workflows&split=true").json()[0] == ["mine.json", "mine.json"]
    assert api.get("/api/userdata/workflows%2Ftheirs.json").json()["1"]["class_type"] == "Text"

    # Overwrite rules, move (rename), delete — as ComfyUI answers them.
    again = api.request("POST", "/api/userdata/workflows%2Fmine.json?overwrite=false", raw=b"{}")
    assert again.status == 409
    moved = api.request(
        "POST", "/api/userdata/workflows%2Fmine.json/move/workflows%2Frenamed.json?overwrite=false"
    )
    assert moved.status == 200 and moved.json() == "workflows/renamed.json"
    names = {w["name"] for w in api.get("/workflows").json()["workflows"]}
    assert "renamed" in names and "mine" not in names
    assert (
        api.request(
            "POST", "/api/userdata/workflows%2Ftheirs.json/move/workflows%2Frenamed.json?overwrite=false"
        ).status
        == 409
    )
    assert api.request("DELETE", "/api/userdata/workflows%2Ftheirs.json").status == 204
    assert api.request("DELETE", "/api/userdata/workflows%2Ftheirs.json").status == 404
    assert api.get("/api/userdata/workflows%2Ftheirs.json").status == 404

    # A shipped workflow's name is taken; the reason phrase says why (the frontend shows it).
    shipped = next(iter(shipped_workflows()))
    refused = api.request("POST", f"/api/userdata/workflows%2F{shipped}.json?overwrite=false", raw=b"{}")
    assert refused.status == 403 and "shipped workflow" in refused.json()["error"]["message"]
    # Nothing leaves the user's folders.
    for path in ("..%2F..%2Fqueue.sqlite3", "workflows%2F..%2F..%2Fqueue.sqlite3", "%2Fetc%2Fpasswd"):
        assert api.get(f"/api/userdata/{path}").status == 403, path
        assert api.request("POST", f"/api/userdata/{path}", raw=b"x").status == 403, path
    assert api.get("/api/userdata").status == 400
    assert api.get("/api/userdata?dir=nowhere").status == 404


def test_userdata_files_and_the_v2_listing(srv, api):
    assert (
        api.request("POST", "/api/userdata/keybindings%2Fmine.json", raw=b'{"a": 1}').json()
        == "keybindings/mine.json"
    )
    r = api.get("/api/userdata/keybindings%2Fmine.json")
    assert r.json() == {"a": 1} and r.headers["Content-Disposition"] == "attachment"
    html = api.request("POST", "/api/userdata/x.html", raw=b"<script>alert(1)</script>")
    assert html.status == 200
    assert api.get("/api/userdata/x.html").headers["Content-Type"] == "application/octet-stream"
    api.request("PUT", "/workflows/flow", {"1": {"class_type": "Text", "inputs": {"text": "x"}}})
    v2 = api.get("/api/v2/userdata").json()
    by_path = {e["path"]: e for e in v2}
    assert by_path["workflows"]["type"] == "directory" and by_path["workflows/flow.json"]["type"] == "file"
    assert by_path["keybindings/mine.json"]["size"] == 8
    assert [e["type"] for e in v2] == sorted((e["type"] for e in v2), key=lambda t: t != "directory")
    assert [e["name"] for e in api.get("/api/v2/userdata?path=keybindings").json()] == ["mine.json"]
    assert api.get("/api/v2/userdata?path=nothing").status == 404
    # user.css: the stylesheet the frontend's index.html always links; empty until the user writes one.
    for path in ("/user.css", "/api/userdata/user.css"):
        r = api.get(path)
        assert r.status == 200 and r.body == b"" and r.headers["Content-Type"].startswith("text/css")
    api.request("POST", "/api/userdata/user.css", raw=b"body { color: red }")
    assert api.get("/user.css").body == b"body { color: red }"


def test_templates_are_the_shipped_workflows_with_thumbnails(api):
    from PIL import Image

    index = api.get("/templates/index.json").json()
    assert schemas.check(index, schemas.TEMPLATE_INDEX) == []
    templates = {t["name"]: t for t in index[0]["templates"]}
    assert set(templates) == {
        n for n, p in shipped_workflows().items() if "nodes" in json.loads(p.read_text())
    }
    lowvram = templates["flux-dev-lowvram-8bit"]
    assert "Phase 1: encode" in lowvram["description"] and "20 steps" in lowvram["description"]
    assert api.get("/templates/flux-dev-lowvram-8bit.json").json() == json.loads(
        shipped_workflows()["flux-dev-lowvram-8bit"].read_text()
    )
    png = api.get(f"/templates/flux-dev-lowvram-8bit-1.{lowvram['mediaSubtype']}")
    assert png.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(png.body)) as img:
        assert img.size == (512, 384)
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 16)}
        assert (0x3F, 0x78, 0x9E) in colours  # the phase 1 group's own colour
    assert api.get("/templates/index.fr.json").json() == index
    assert api.get("/templates/index_logo.json").json() == {}
    for missing in ("/templates/nope.json", "/templates/nope-1.png", "/templates/..%2Fserver%2Fapp.py"):
        assert api.get(missing).status == 404, missing
    assert api.get("/api/workflow_templates").json() == {}


def test_extensions_list_and_serve_web_directories(srv, api):
    urls = api.get("/api/extensions").json()
    assert schemas.check(urls, schemas.STRINGS) == []
    name = web_nodes.__name__
    assert urls == [
        "/extensions/fluxloom/fluxloom.js",
        f"/extensions/{name}/echo.js",
        f"/extensions/{name}/lib/greeting.js",
    ]
    echo = api.get(f"/extensions/{name}/echo.js")
    assert echo.status == 200 and echo.headers["Content-Type"].startswith("text/javascript")
    assert b"registerExtension" in echo.body
    assert api.get(f"/extensions/{name}/notes.txt").status == 200  # served, not listed
    assert api.get("/extensions/fluxloom/fluxloom.css").status == 200
    for escape in (
        f"/extensions/{name}/..%2Fweb_nodes.py",
        f"/extensions/{name}/%2Fetc%2Fpasswd",
        "/extensions/fluxloom/..%2F..%2Fpyproject.toml",
    ):
        assert api.get(escape).status == 404, escape
    assert api.get("/extensions/other/x.js").status == 404  # the static site's, which has none here


def test_web_directories_of_custom_node_modules(tmp_path, monkeypatch):
    import sys
    import types

    with_dir = types.ModuleType("pack_with_web")
    with_dir.__file__ = str(tmp_path / "pack_with_web.py")
    with_dir.WEB_DIRECTORY = "./js"
    (tmp_path / "js").mkdir()
    missing = types.ModuleType("pack_missing_web")
    missing.__file__ = str(tmp_path / "pack_missing_web.py")
    missing.WEB_DIRECTORY = "nowhere"
    plain = types.ModuleType("pack_plain")
    for m in (with_dir, missing, plain):
        monkeypatch.setitem(sys.modules, m.__name__, m)
    found = web_directories(["pack_with_web", "pack_missing_web", "pack_plain", "not_loaded"])
    assert found == {"pack_with_web": (tmp_path / "js").resolve()}


def test_frontend_info_routes(srv, api, tmp_path):
    features = api.get("/api/features").json()
    assert features["assets"] is False and features["max_upload_size"] == 64 * 2**20
    assert api.get("/api/i18n").json() == {}
    assert api.get("/api/global_subgraphs").json() == {}
    assert api.get("/api/global_subgraphs/abc").json() is None
    models = tmp_path / "data" / "models"
    (models / "embeddings").mkdir(parents=True)
    (models / "embeddings" / "easy.safetensors").write_bytes(b"x")
    assert api.get("/api/embeddings").json() == ["easy"]
    folders = api.get("/api/experiment/models").json()
    assert schemas.check(folders, [schemas.MODEL_FOLDER]) == []
    assert {"diffusers", "diffusion_models", "text_encoders", "vae", "loras"} <= {f["name"] for f in folders}
    pipeline = models / "diffusers" / "tiny"
    (pipeline / "vae").mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    (pipeline / "vae" / "w.safetensors").write_bytes(b"0" * 100)
    files = api.get("/api/experiment/models/diffusers").json()
    assert schemas.check(files, [schemas.MODEL_FILE]) == []
    assert [(f["name"], f["size"]) for f in files] == [("tiny", 102)]
    assert api.get("/api/experiment/models/loras").json() == []
    assert api.get("/api/experiment/models/nope").status == 404

    lora = models / "loras" / "style.safetensors"
    lora.parent.mkdir(parents=True)
    header = json.dumps({"__metadata__": {"ss_network_dim": "16"}}).encode()
    lora.write_bytes(struct.pack("<Q", len(header)) + header)
    assert api.get("/api/view_metadata/loras?filename=style.safetensors").json() == {"ss_network_dim": "16"}
    for bad in (
        "loras?filename=none.safetensors",
        "loras?filename=style.ckpt",
        "nope?filename=style.safetensors",
    ):
        assert api.get(f"/api/view_metadata/{bad}").status == 404, bad
    assert api.get("/api/view_metadata/loras?filename=..%2F..%2Fqueue.sqlite3.safetensors").status == 403


def test_websocket_answers_the_feature_flags_handshake(srv):
    ws = WSClient(f"ws://127.0.0.1:{srv.port}/ws?clientId=flags")
    try:
        assert ws.recv()["type"] == "status"
        ws._send(
            1, json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}).encode()
        )
        answer = ws.recv()
        assert answer["type"] == "feature_flags" and answer["data"]["assets"] is False
    finally:
        ws.close()


def test_official_frontend_is_served_or_named_when_missing(tmp_path, monkeypatch):
    import server.frontend as frontend

    static = comfyui_static_dir()
    assert (static / "index.html").is_file() and (static / "scripts" / "app.js").is_file()
    srv = ServerThread(tmp_path / "data", web_dir=static).start()
    try:
        page = Api(srv.url).get("/")
        assert page.status == 200 and b"<title>ComfyUI</title>" in page.body
        assert Api(srv.url).get("/scripts/app.js").body.startswith(b"// Shim for scripts/app.ts")
        assert Api(srv.url).get("/extensions/core/groupNode.js").status == 200
    finally:
        srv.stop()
    monkeypatch.setattr(frontend, "COMFYUI_MODULE", "comfyui_frontend_package_not_installed")
    with pytest.raises(
        FrontendNotInstalled, match=rf"pip install 'fluxloom\[comfyui\]'.*=={COMFYUI_VERSION}"
    ):
        comfyui_static_dir()


def test_internal_routes_feed_the_console_panel(srv, api):
    import logging

    logging.getLogger("fluxloom.test").warning("a line for the console")
    raw = api.get("/internal/logs/raw").json()
    assert raw["size"]["cols"] > 0 and any("a line for the console" in e["m"] for e in raw["entries"])
    assert all(set(e) == {"t", "m"} for e in raw["entries"])
    assert "a line for the console" in api.get("/internal/logs").json()
    # A subscribed websocket client gets new lines as `logs` messages, an unsubscribed one does not.
    ws = WSClient(f"ws://127.0.0.1:{srv.port}/ws?clientId=console")
    try:
        ws.recv()  # status
        assert api.request(
            "PATCH", "/internal/logs/subscribe", {"clientId": "console", "enabled": True}
        ).json() == {"subscribed": True}
        logging.getLogger("fluxloom.test").warning("streamed to the console")
        message = ws.until(lambda m: m["type"] == "logs")[-1]
        assert "streamed to the console" in message["data"]["entries"][0]["m"]
        assert api.request(
            "PATCH", "/internal/logs/subscribe", {"clientId": "console", "enabled": False}
        ).json() == {"subscribed": False}
    finally:
        ws.close()
    assert api.request("PATCH", "/internal/logs/subscribe", {"enabled": True}).status == 400

    paths = api.get("/internal/folder_paths").json()
    assert paths["vae"][0].endswith("models/vae") and "diffusers" in paths
    pid = api.queue(slow_prompt(steps=1, delay=0))
    api.wait_job(pid)
    assert api.get("/internal/files/output").json() == []  # SaveTestImage writes into output/tests/
    (srv.runtime.env.input_dir / "a.png").write_bytes(b"x")
    assert api.get("/internal/files/input").json() == ["a.png"]
    assert api.get("/internal/files/models").status == 400


def test_serve_says_what_to_install_when_the_frontend_package_is_missing(tmp_path):
    import os
    import subprocess
    import sys

    # A package of that name without the static site shadows the real one.
    (tmp_path / "comfyui_frontend_package").mkdir()
    (tmp_path / "comfyui_frontend_package" / "__init__.py").write_text("")
    from tests.browser.conftest import REPO

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--frontend",
            "comfyui",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "has no static/index.html" in done.stderr and "pip install 'fluxloom[comfyui]'" in done.stderr


def test_view_serves_the_channels_and_previews_the_frontend_asks_for(srv, api):
    from PIL import Image

    rgba = Image.new("RGBA", (4, 2), (200, 100, 50, 255))
    rgba.putpixel((0, 0), (200, 100, 50, 0))  # a masked pixel
    rgba.save(srv.runtime.env.input_dir / "masked.png")

    def view(query: str) -> Image.Image:
        r = api.get(f"/view?filename=masked.png&type=input&{query}")
        assert r.status == 200, r.body
        return Image.open(io.BytesIO(r.body))

    assert view("").mode == "RGBA"
    assert view("channel=rgb").mode == "RGB" and view("channel=rgb").getpixel((0, 0)) == (200, 100, 50)
    alpha = view("channel=a")
    assert alpha.getpixel((0, 0)) == (0, 0, 0, 0) and alpha.getpixel((1, 0)) == (0, 0, 0, 255)
    assert view("preview=webp;50").format == "WEBP" and view("preview=jpeg;80").format == "JPEG"
