"""Fault 8 of issue 13, case by case (schemathesis covers it at large): what /openapi.json says is
what the server does. Undocumented 400s, missing constraints, lenient bodies, and 404 for a known
path with a wrong method were each found by hand before."""

from __future__ import annotations

import re

import pytest

from server.openapi import CHECKED, OPERATIONS, check_body
from server.routes.workflows import NAME
from tests.server.conftest import Api, ServerThread, math_prompt


@pytest.fixture
def doc_api(tmp_path):
    server = ServerThread(tmp_path / "data").start()
    api = Api(server.url)
    yield api, api.get("/openapi.json").json()
    server.stop()


def _documented(doc: dict, method: str, path: str, status: int) -> bool:
    return str(status) in doc["paths"][path][method.lower()]["responses"]


def test_lenient_bodies_are_400_as_the_document_says(doc_api):
    api, doc = doc_api
    cases = [
        ("POST", "/queue", {"delete": [{}]}, "body.delete[0] must be string"),
        ("POST", "/history", {"delete": "p1"}, "body.delete must be array"),
        ("POST", "/queue", {"clear": "yes"}, "body.clear must be boolean"),
        ("POST", "/prompt", {"prompt": math_prompt(1), "prompt_id": {}}, "body.prompt_id must be string"),
        ("POST", "/prompt", {"prompt": {}}, "body.prompt must not be empty"),
        ("POST", "/prompt", {"prompt": math_prompt(1), "prompt_id": "a/b"}, "body.prompt_id has characters"),
        ("POST", "/interrupt", {"prompt_id": 5}, "body.prompt_id must be string or null"),
        ("POST", "/free", {"unload_models": "true"}, "body.unload_models must be boolean"),
        ("POST", "/workflows/flux-schnell/queue", {"front": 1}, "body.front must be boolean or null"),
    ]
    for method, path, body, message in cases:
        r = api.request(method, path, body)
        assert r.status == 400, (path, body, r.body)
        assert message in r.json()["error"]["message"], (path, r.json())
        assert _documented(doc, method, path.replace("flux-schnell", "{name}"), 400)
    # Lenient where ComfyUI clients need it: nulls for optional fields, unknown fields ignored.
    r = api.post("/prompt", {"prompt": math_prompt(1), "client_id": None, "front": None, "partial": [1]})
    assert r.status == 200, r.body
    assert api.post("/interrupt", {}).status == 200


def test_non_json_bodies_and_bad_queries_are_documented_400s(doc_api):
    api, doc = doc_api
    for path in ("/free", "/interrupt", "/queue", "/history"):
        r = api.request("POST", path, raw=b"\x00")
        assert r.status == 400 and r.json()["error"]["type"] == "invalid_json"
        assert _documented(doc, "POST", path, 400)
    for query in ("max_items=-1", "offset=null"):
        assert api.get(f"/history?{query}").status == 400
    assert _documented(doc, "GET", "/history", 400)
    assert api.get("/view?filename=").status == 400 and _documented(doc, "GET", "/view", 400)
    assert api.get("/workflows/a%01b").status == 400 and _documented(doc, "GET", "/workflows/{name}", 400)
    r = api.get("/ws")
    assert r.status == 400 and r.json()["error"]["type"] == "not_websocket"
    assert _documented(doc, "GET", "/ws", 400)


def test_a_known_path_with_a_wrong_method_is_405_with_allow(doc_api):
    api, doc = doc_api
    for method, path, allow in [
        ("DELETE", "/prompt", {"GET", "HEAD", "POST"}),
        ("GET", "/interrupt", {"POST"}),
        ("TRACE", "/api/free", {"POST"}),
        ("PATCH", "/workflows/x", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PUT", "/ws", {"GET"}),
    ]:
        r = api.request(method, path)
        assert r.status == 405, (method, path, r.status)
        assert r.json()["error"]["type"] == "method_not_allowed"
        assert set(r.headers["Allow"].split(",")) == allow, r.headers["Allow"]
    assert api.request("POST", "/no/such/path").status == 404
    assert api.get("/no/such/file.js").status == 404


def test_constraints_are_in_the_document(doc_api):
    _, doc = doc_api
    history = {p["name"]: p["schema"] for p in doc["paths"]["/history"]["get"]["parameters"]}
    assert history["max_items"] == {"type": "integer", "minimum": 0}
    view = {p["name"]: p["schema"] for p in doc["paths"]["/view"]["get"]["parameters"]}
    assert view["filename"]["minLength"] == 1
    body = doc["paths"]["/prompt"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["prompt"]["minProperties"] == 1 and body["required"] == ["prompt"]
    name = doc["paths"]["/workflows/{name}"]["get"]["parameters"][0]["schema"]["pattern"]
    # The documented pattern takes exactly the names the server takes.
    for candidate in ["flux", "My flow (2)", "a.b", "a..b", ".hidden", "x" * 128, "x" * 129, "a/b", "é", ""]:
        server_takes = bool(NAME.match(candidate)) and ".." not in candidate
        assert bool(re.search(name, candidate)) == server_takes, candidate


def test_body_checker_covers_every_keyword_the_document_uses():
    used: set[str] = set()

    def walk(schema: object) -> None:
        if isinstance(schema, dict):
            used.update(k for k in schema if k not in ("properties",))
            for key, value in schema.items():
                if key == "properties":
                    for sub in value.values():
                        walk(sub)
                elif isinstance(value, dict):
                    walk(value)

    for op in OPERATIONS.values():
        walk(op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema"))
    assert used <= CHECKED, used - CHECKED
    schema = {"type": "object", "properties": {"n": {"type": ["number", "null"], "exclusiveMaximum": 10}}}
    assert check_body({"n": None}, schema) is None
    assert check_body({"n": True}, schema) == "body.n must be number or null, not boolean"
    assert check_body({"n": 10}, schema) == "body.n must be < 10"
