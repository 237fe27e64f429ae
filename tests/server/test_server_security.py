"""Every security rule, against a real server: bind rules, token, origin and host checks, safe
paths for /view and uploads, size limits, image-only uploads, JSON 404s."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
from PIL import Image

from server.routes.common import Limits
from server.security import BindRefused, SecurityConfig, check_bind
from tests.server.conftest import Api, ServerThread, math_prompt
from tests.server.serve_process import ServeProcess, shared_models
from tests.server.wsclient import HandshakeRefused

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def png_bytes(size: tuple[int, int] = (4, 4), color: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (color, color, color)).save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(api: Api, filename: str, data: bytes, **fields: str):
    body, ctype = multipart(fields, filename, data)
    return api.request("POST", "/upload/image", raw=body, headers={"Content-Type": ctype})


def test_bind_rules():
    assert check_bind(SecurityConfig(host="127.0.0.1")) is None
    assert check_bind(SecurityConfig(host="::1")) is None
    assert check_bind(SecurityConfig(host="0.0.0.0", token="s3cret")) is None
    with pytest.raises(BindRefused, match="--token"):
        check_bind(SecurityConfig(host="0.0.0.0"))
    assert "WITHOUT an access token" in check_bind(SecurityConfig(host="0.0.0.0", allow_unauthenticated=True))


def test_cli_refuses_exposed_address_without_token(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an access token" in run.stderr


@pytest.fixture
def token_server(tmp_path):
    srv = ServerThread(tmp_path / "data", security=SecurityConfig(host="127.0.0.1", token="s3cret")).start()
    yield srv
    srv.stop()


def test_token_is_required_everywhere(token_server):
    anon = Api(token_server.url)
    for path in ("/prompt", "/object_info", "/", "/view?filename=x.png", "/nope", "/openapi.json"):
        r = anon.get(path)
        assert r.status == 401, path
        assert r.json()["error"]["type"] == "unauthorized"
    assert anon.post("/prompt", {"prompt": math_prompt(1)}).status == 401
    assert Api(token_server.url, {"Authorization": "Bearer wrong"}).get("/prompt").status == 401
    authed = Api(token_server.url, {"Authorization": "Bearer s3cret"})
    assert authed.get("/prompt").status == 200
    assert authed.post("/prompt", {"prompt": math_prompt(1)}).status == 200
    # ?token= works and sets a cookie so the canvas's own requests (modules, websocket) work.
    r = anon.get("/?token=s3cret")
    assert r.status == 200
    cookie = r.headers["Set-Cookie"].split(";")[0]
    assert cookie == "fluxloom_token=s3cret" and "HttpOnly" in r.headers["Set-Cookie"]
    assert Api(token_server.url, {"Cookie": cookie}).get("/queue").status == 200
    with pytest.raises(HandshakeRefused) as refused:
        token_server.ws("a")
    assert refused.value.status == 401
    ws = token_server.ws("a", headers={"Cookie": cookie})
    assert ws.recv()["type"] == "status"
    ws.close()
    ws = token_server.ws(path="/ws", headers={"Authorization": "Bearer s3cret"})
    assert ws.recv()["type"] == "status"
    ws.close()


def test_cross_origin_state_changes_are_refused(server, api):
    own = f"http://127.0.0.1:{server.port}"
    evil = {"Origin": "http://evil.example"}
    for method, path, body in (
        ("POST", "/prompt", {"prompt": math_prompt(1)}),
        ("POST", "/api/prompt", {"prompt": math_prompt(1)}),
        ("POST", "/queue", {"clear": True}),
        ("POST", "/interrupt", {}),
        ("PUT", "/workflows/x", {"a": 1}),
        ("DELETE", "/workflows/x", None),
    ):
        r = api.request(method, path, body, headers=evil)
        assert r.status == 403, (method, path)
        assert r.json()["error"]["type"] == "forbidden_origin"
    assert api.post("/prompt", {"prompt": math_prompt(1)}, headers={"Origin": "null"}).status == 403
    port_twin = {"Origin": f"http://127.0.0.1:{server.port + 1}"}  # same host, other port: another origin
    assert api.post("/prompt", {"prompt": math_prompt(1)}, headers=port_twin).status == 403
    assert (
        api.post("/prompt", {"prompt": math_prompt(1)}, headers={"Sec-Fetch-Site": "cross-site"}).status
        == 403
    )
    assert api.get("/queue").json()["queue_pending"] == []
    # Reads stay open to cross-origin GETs (the browser's same-origin policy hides the answers).
    assert api.get("/prompt", headers=evil).status == 200
    # The server's own page, and clients that send no Origin, may change state.
    assert api.post("/prompt", {"prompt": math_prompt(1)}, headers={"Origin": own}).status == 200
    assert api.post("/prompt", {"prompt": math_prompt(2)}).status == 200
    with pytest.raises(HandshakeRefused) as refused:
        server.ws("x", headers=evil)
    assert refused.value.status == 403
    ws = server.ws("x", headers={"Origin": own})
    assert ws.recv()["type"] == "status"
    ws.close()


def _raw_status(port: int, head: bytes) -> int:
    """Send raw request bytes (headers urllib would refuse to write); the answer's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split()[1])


def test_malformed_token_host_and_origin_headers_are_refused_not_500(server, tmp_path):
    guarded = ServerThread(tmp_path / "guarded", security=SecurityConfig(token="s3cret")).start()
    try:
        for head in (
            b"GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n",
            b"GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: fluxloom_token=\xff\r\n",
        ):
            assert _raw_status(guarded.port, head) == 401
        assert _raw_status(guarded.port, b"GET /prompt?token=s3cret HTTP/1.1\r\nHost: 127.0.0.1\r\n") == 200
    finally:
        guarded.stop()
    for head in (
        b"GET /prompt HTTP/1.1\r\nHost: [::1\r\n",
        b"POST /interrupt HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://[::1\r\nContent-Length: 0\r\n",
    ):
        assert _raw_status(server.port, head) == 403
    assert _raw_status(server.port, b"GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n") == 200


def test_dns_rebinding_host_is_refused(server, api):
    r = api.get("/prompt", headers={"Host": f"attacker.example:{server.port}"})
    assert r.status == 403 and r.json()["error"]["type"] == "forbidden_host"
    assert api.get("/prompt", headers={"Host": f"localhost:{server.port}"}).status == 200


def test_view_stays_inside_its_folders(server, api, tmp_path):
    out = server.runtime.env.output_dir
    (out / "sub").mkdir()
    (out / "sub" / "ok.png").write_bytes(png_bytes())
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, out / "link.txt")
    os.symlink(tmp_path, out / "linkdir")
    assert api.get("/view?filename=ok.png&subfolder=sub").status == 200
    assert api.get("/view?filename=ok.png&subfolder=sub&type=output").body == png_bytes()
    for query in (
        "filename=../secret.txt",
        "filename=secret.txt&subfolder=..",
        "filename=secret.txt&subfolder=../..",
        f"filename={secret}",
        "filename=ok.png&subfolder=/etc",
        "filename=link.txt",
        "filename=secret.txt&subfolder=linkdir",
        "filename=ok.png%00.txt&subfolder=sub",
        "filename=..%2Fsecret.txt",
    ):
        r = api.get("/view?" + query)
        assert r.status == 403, query
        assert b"top secret" not in r.body
    assert api.get("/view?filename=missing.png").status == 404
    assert api.get("/view?filename=ok.png&type=models").status == 400
    assert api.get("/view").status == 400


def test_uploads_stay_inside_and_must_be_images(server, tmp_path):
    api = Api(server.url)
    r = upload(api, "cat.png", png_bytes())
    assert r.status == 200 and r.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert (server.runtime.env.input_dir / "cat.png").read_bytes() == png_bytes()
    r = upload(api, "cat.png", png_bytes(color=1))  # no overwrite: a new name, as in ComfyUI
    assert r.json()["name"] == "cat (1).png"
    r = upload(api, "cat.png", png_bytes(color=2), overwrite="true", subfolder="pets")
    assert r.json() == {"name": "cat.png", "subfolder": "pets", "type": "input"}
    assert (server.runtime.env.input_dir / "pets" / "cat.png").is_file()

    os.symlink(tmp_path, server.runtime.env.input_dir / "escape")
    for name, fields in (
        ("../evil.png", {}),
        ("/tmp/evil.png", {}),
        ("evil.png", {"subfolder": ".."}),
        ("evil.png", {"subfolder": "/tmp"}),
        ("evil.png", {"subfolder": "escape"}),
        ("evil.png", {"subfolder": "sub\x00dir"}),
        (".hidden.png", {}),
    ):
        r = upload(api, name, png_bytes(), **fields)
        assert r.status == 403, (name, fields)
    r = upload(api, "evil\x00.png", png_bytes())  # NUL in a part header: malformed, refused
    assert r.status in (400, 403)
    assert not (tmp_path / "evil.png").exists()
    r = upload(api, "notes.png", b"this is not an image at all")
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_image"
    truncated = png_bytes((64, 64))[:-40]
    assert upload(api, "cut.png", truncated).status == 400
    assert not (server.runtime.env.input_dir / "notes.png").exists()
    r = api.request("POST", "/upload/image", raw=b"x", headers={"Content-Type": "text/plain"})
    assert r.status == 400
    nested = (
        b"--xx\r\nContent-Type: multipart/mixed; boundary=yy\r\n\r\n--yy\r\n\r\nx\r\n--yy--\r\n--xx--\r\n"
    )
    r = api.request(
        "POST", "/upload/image", raw=nested, headers={"Content-Type": "multipart/mixed; boundary=xx"}
    )
    assert r.status == 400 and "nested multipart" in r.json()["error"]["message"]
    # A file name that is not UTF-8 could be stored but never named again by a client.
    body = (
        b'--xx\r\nContent-Disposition: form-data; name="image"; filename="\xff.png"\r\n\r\n'
        + png_bytes()
        + b"\r\n--xx--\r\n"
    )
    r = api.request(
        "POST", "/upload/image", raw=body, headers={"Content-Type": "multipart/form-data; boundary=xx"}
    )
    assert r.status == 400 and "not valid UTF-8" in r.json()["error"]["message"]


def test_size_limits(tmp_path):
    limits = Limits(max_json_bytes=4096, max_upload_bytes=2048, max_image_pixels=100 * 100)
    srv = ServerThread(tmp_path / "data", limits=limits).start()
    try:
        api = Api(srv.url)
        big = {"prompt": math_prompt(1), "extra_data": {"pad": "x" * 5000}}
        r = api.post("/prompt", big)
        assert r.status == 413 and r.json()["error"]["type"] == "request_too_large"
        assert api.post("/prompt", {"prompt": math_prompt(1)}).status == 200
        noisy = io.BytesIO()
        Image.effect_noise((64, 64), 100).save(noisy, format="PNG")
        r = upload(api, "big.png", noisy.getvalue())
        assert r.status == 413
        r = upload(api, "wide.png", png_bytes((200, 60)))  # small file, too many pixels
        assert r.status == 400 and "pixel limit" in r.json()["error"]["message"]
        r = api.request(
            "POST", "/upload/image", raw=b"x" * 10 * 2**20, headers={"Content-Type": "multipart/form-data"}
        )
        assert r.status == 413
    finally:
        srv.stop()


def test_bodies_without_content_length_are_bounded_and_read_whole(tmp_path):
    """A chunked body has no Content-Length to check up front: the limits hold while reading,
    and a large body under the limit arrives whole (not cut at the first chunk read)."""
    limits = Limits(max_json_bytes=4 * 2**20, max_upload_bytes=2048)
    srv = ServerThread(tmp_path / "data", limits=limits).start()
    try:
        api = Api(srv.url)
        prompt = math_prompt(7)
        prompt["2"]["_meta"] = {"title": "t" * 3 * 2**20}
        r = api.post("/prompt", {"prompt": prompt})
        assert r.status == 200, r.body[:200]
        assert api.wait_job(r.json()["prompt_id"])["outputs"] == {"2": {"text": ["8"]}}
        chunked = {"Content-Type": "application/json"}
        big = b'{"prompt": {}, "pad": "' + b"x" * (5 * 2**20) + b'"}'
        r = api.request("POST", "/prompt", raw=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]))
        assert r.status == 413 and r.json()["error"]["type"] == "request_too_large"
        small = json.dumps({"prompt": math_prompt(1)}).encode()
        r = api.request("POST", "/prompt", raw=iter([small[:10], small[10:]]), headers=chunked)
        assert r.status == 200
        body, ctype = multipart({"subfolder": "s" * 2000}, "ok.png", png_bytes())
        r = api.request("POST", "/upload/image", raw=iter([body]), headers={"Content-Type": ctype})
        assert r.status == 413 and "subfolder" in r.json()["error"]["message"]
        body, ctype = multipart({"subfolder": "pets"}, "ok.png", png_bytes())
        r = api.request("POST", "/upload/image", raw=iter([body]), headers={"Content-Type": ctype})
        assert r.status == 200 and r.json() == {"name": "ok.png", "subfolder": "pets", "type": "input"}
    finally:
        srv.stop()


def test_view_serves_only_raster_media_inline(server, api):
    """A real PNG uploaded under an active name (a PNG text chunk can hold a <script>) must not
    render as a page on the server's own origin, where its script could queue work."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("c", "<script>fetch('/prompt', {method: 'POST'})</script>")
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    for name in ("evil.html", "evil.svg", "evil.js", "noext"):
        assert upload(api, name, buf.getvalue()).status == 200
        r = api.get(f"/view?filename={name}&type=input")
        assert r.status == 200 and r.body == buf.getvalue()
        assert r.headers["Content-Type"] == "application/octet-stream", name
        assert r.headers["Content-Disposition"].startswith("attachment"), name
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    upload(api, "fine.png", buf.getvalue())
    r = api.get("/view?filename=fine.png&type=input")
    assert r.headers["Content-Type"] == "image/png" and r.headers["Content-Disposition"].startswith("inline")


def test_upload_where_a_file_and_a_folder_collide_is_409(server, api):
    assert upload(api, "x.png", png_bytes(), subfolder="pets.png").status == 200
    r = upload(api, "pets.png", png_bytes(), overwrite="true")  # a folder has that name
    assert r.status == 409 and r.json()["error"]["type"] == "path_conflict"
    r = upload(api, "y.png", png_bytes(), subfolder="pets.png/x.png")  # a file is in the way
    assert r.status == 409 and r.json()["error"]["type"] == "path_conflict"
    inputs = server.runtime.env.input_dir
    assert (inputs / "pets.png").is_dir() and (inputs / "pets.png" / "x.png").is_file()
    assert not [p.name for p in inputs.iterdir() if p.name.startswith(".upload-")]


def test_over_long_names_are_client_errors(server, api):
    """Names the file system refuses (ENAMETOOLONG) are answered as bad requests, not 500s."""
    for query in (
        "/view?filename=" + "a" * 300,
        "/view?filename=x.png&subfolder=" + "a" * 300,
        "/view?filename=x.png&subfolder=" + "a/" * 3000,
    ):
        r = api.get(query)
        assert r.status == 403 and r.json()["error"]["type"] == "forbidden_path", r.body[:200]
    assert api.get("/" + "a" * 300).status == 404
    r = upload(api, "x.png", png_bytes(), subfolder="a" * 300)
    assert r.status == 403 and "over 255 bytes" in r.json()["error"]["message"]
    r = upload(api, "b" * 250 + ".png", png_bytes())
    assert r.status == 400 and "over 200 bytes" in r.json()["error"]["message"]
    # The longest accepted name still gets its " (1)" when taken.
    name = "c" * 196 + ".png"
    assert upload(api, name, png_bytes()).json()["name"] == name
    assert upload(api, name, png_bytes()).json()["name"] == "c" * 196 + " (1).png"


def test_unknown_routes_are_json_404(api):
    for method, path in (("GET", "/nope"), ("POST", "/nope"), ("GET", "/api/nope"), ("DELETE", "/prompt/x")):
        r = api.request(method, path)
        assert r.status == 404, (method, path)
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"]["type"] == "not_found"
    r = api.request("DELETE", "/prompt")
    assert r.status in (404, 405) and r.json()["error"]["type"] in ("not_found", "method_not_allowed")


@pytest.fixture
def serve_dirs(tmp_path, tmp_path_factory):
    return tmp_path / "data", shared_models(tmp_path_factory), tmp_path / "serve.log"


@pytest.mark.slow
def test_serve_off_loopback_with_token_or_explicit_opt_out(serve_dirs):
    data, models, log = serve_dirs
    srv = ServeProcess(data, models, log, "--host", "0.0.0.0", "--token", "s3cret", ready_status=401)
    try:
        assert srv.api.get("/queue").status == 401
        authed = Api(srv.api.base, {"Authorization": "Bearer s3cret"})
        assert authed.get("/queue").status == 200
        assert authed.get("/prompt?token=s3cret").status == 200
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait() == 0
    srv = ServeProcess(data, models, log, "--host", "0.0.0.0", "--allow-unauthenticated", "--max-nodes", "3")
    try:
        assert srv.api.get("/queue").status == 200
        # --max-nodes: a prompt over the cap is refused before anything is checked or stored.
        small = {"t": {"class_type": "Text", "inputs": {"text": "a"}}}
        small["show"] = {"class_type": "ShowValue", "inputs": {"value": ["t", 0]}}
        big = {**small, **{f"x{i}": {"class_type": "Text", "inputs": {"text": "b"}} for i in range(2)}}
        r = srv.api.post("/prompt", {"prompt": big})
        assert r.status == 400 and r.json()["error"]["type"] == "prompt_too_large"
        assert "4 nodes; the limit is 3" in r.json()["error"]["message"]
        assert srv.api.post("/prompt", {"prompt": small}).status == 200
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert "WITHOUT an access token (--allow-unauthenticated)" in log.read_text()
