"""The OpenAPI document matches the router; /api aliases; the static canvas folder (and its
node_modules) without escapes; /object_info and /system_stats in ComfyUI's shapes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from server.app import served_routes
from server.routes import ROUTES
from tests.server.conftest import Api, ServerThread

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_openapi_describes_every_route(server, api):
    doc = api.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set(served_routes(server.app))
    assert documented == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] and op["responses"], path
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path
    # Every route is also under /api (unless it is one ComfyUI serves at one place only), and both answer.
    for route in ROUTES:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)  # the router's name for {path:.*}
        assert (route.method, path) in served
        assert ((route.method, "/api" + path) in served) == route.api_alias, path
    assert api.get("/api/openapi.json").json() == doc
    assert api.get("/api/prompt").json() == api.get("/prompt").json()
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_object_info_shapes(api):
    info = api.get("/object_info").json()
    entry = info["IntegerMath"]
    assert entry["input"]["required"]["a"][0] == "INT"
    assert entry["input"]["required"]["operation"][0][:2] == ["add", "subtract"]
    assert entry["output"] == ["INT"] and entry["output_name"] == ["result"]
    assert {"name", "display_name", "description", "category", "output_node", "python_module"} <= set(entry)
    assert info["ShowValue"]["output_node"] is True and "SlowCount" in info
    assert api.get("/object_info/SlowCount").json() == {"SlowCount": info["SlowCount"]}
    r = api.get("/object_info/Nope")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found"


def test_system_stats_shape(api):
    stats = api.get("/system_stats").json()
    system = stats["system"]
    assert {"os", "python_version", "embedded_python", "pytorch_version", "ram_total", "ram_free"} <= set(
        system
    )
    assert system["ram_total"] >= system["ram_free"] > 0
    dev = stats["devices"][0]
    assert set(dev) >= {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }
    assert "fluxloom" not in stats  # no model manager in this server


def test_static_web_folder_and_node_modules(tmp_path):
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>canvas</title>")
    (web / "js" / "app.js").write_text("export const x = 1;")
    (web / "node_modules" / "lib").mkdir(parents=True)
    (web / "node_modules" / "lib" / "mod.js").write_text("export default 2;")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, web / "leak.txt")
    os.symlink(tmp_path, web / "up")
    srv = ServerThread(tmp_path / "data", web_dir=web).start()
    try:
        api = Api(srv.url)
        r = api.get("/")
        assert (
            r.status == 200
            and b"<title>canvas</title>" in r.body
            and r.headers["Content-Type"].startswith("text/html")
        )
        r = api.get("/js/app.js")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        assert api.get("/node_modules/lib/mod.js").body == b"export default 2;"
        for path in (
            "/leak.txt",
            "/up/secret.txt",
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/js/../../secret.txt",
        ):
            r = api.get(path)
            assert r.status == 404, path
            assert b"top secret" not in r.body
    finally:
        srv.stop()


def test_repo_web_folder_serves_litegraph(server, api):
    """The real web/ folder: the browser imports litegraph from /node_modules."""
    r = api.get("/node_modules/@comfyorg/litegraph/dist/litegraph.es.js")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    on_disk = os.path.join(REPO, "web/node_modules/@comfyorg/litegraph/dist/litegraph.es.js")
    assert len(r.body) == os.path.getsize(on_disk)
    assert api.get("/").status == 200  # index.html, or a placeholder until the canvas lands


def test_serve_names_a_custom_node_module_that_fails_to_import(tmp_path):
    (tmp_path / "broken_nodes.py").write_text('raise RuntimeError("boom at import")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FLUXLOOM_EXTRA_NODES": "broken_nodes"}
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "broken_nodes.py:1" in run.stderr and "RuntimeError: boom at import" in run.stderr
    assert "Traceback" not in run.stderr
