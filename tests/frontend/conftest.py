"""The official ComfyUI frontend against fluxloom: a real `fluxloom serve --frontend comfyui`
subprocess (demo model, the test custom node pack with a web directory) shared by every browser
test, Debian's Chromium driven by Playwright (tests/conftest.py's `browser`), and a page fixture
that fails a test on any failed request to fluxloom or console error the frontend did not make on
purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.browser.conftest import CHROMIUM, REPO, Server, _free_port, _wait_ready
from tests.frontend.frontend_page import open_frontend

WEB_NODES = "tests.frontend.web_nodes"
# Requests the frontend makes expecting a 404, answered as ComfyUI answers them:
# - comfy.templates.json: the legacy node-templates store, read on every load; 404 = none saved;
# - workflows/.index.json: the workflows sidebar's bookmarks, read when it opens; 404 = none yet.
EXPECTED_HTTP_ERRORS = {
    ("GET", "/api/userdata/comfy.templates.json"): 404,
    ("GET", "/api/userdata/workflows%2F.index.json"): 404,
}
# Settings that keep the first-run tutorial and the release check (the internet) out of the tests.
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False}


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fluxloom-comfyui")
    port = _free_port()
    log_path = root / "server.log"
    # `-m server.cli` (not the console script) so that the repository, and so the test node
    # pack, is importable.
    cmd = [sys.executable, "-m", "server.cli", "serve", "--frontend", "comfyui", "--port", str(port)]
    cmd += ["--models", str(root / "models"), "--data-dir", str(root / "data")]
    env = {**os.environ, "FLUXLOOM_EXTRA_NODES": WEB_NODES}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(url, proc, log_path)
        request(url, "POST", "api/settings", QUIET_SETTINGS)
        yield Server(url=url, root=root, process=proc, log_path=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(base: str, method: str, path: str, body=None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + quote(path, safe="/?=&,%"), data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class PageLog:
    """What the page did that a test may not allow: failed requests to fluxloom, console errors."""

    base: str
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: dict[tuple[str, str], int] = field(default_factory=lambda: dict(EXPECTED_HTTP_ERRORS))
    # Console errors a test provokes on purpose (the frontend logs a refused save), by substring.
    allowed_errors: list[str] = field(default_factory=list)

    def response(self, response) -> None:
        url = response.url
        if not url.startswith(self.base) or response.status < 400:
            return
        path = "/" + url[len(self.base) :].split("?")[0]
        if self.expected.get((response.request.method, path)) != response.status:
            self.failed.append(f"{response.status} {response.request.method} {url}")

    def console(self, message) -> None:
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        if message.text.startswith("Failed to load resource") and (
            not where.startswith(self.base)  # the frontend's own calls to the internet
            or any(where.split("?")[0].endswith(p) for _, p in self.expected)
        ):
            return  # failed requests are judged by response() above
        if any(text in message.text for text in self.allowed_errors):
            return
        self.errors.append(f"{message.text} ({where})")


@pytest.fixture
def page_log(comfy_server: Server) -> PageLog:
    return PageLog(comfy_server.url)


@pytest.fixture
def page(browser, comfy_server: Server, page_log: PageLog):
    """The official frontend, loaded, with fluxloom's extension running; the test fails on any
    failed request to fluxloom or console error it did not expect."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}")
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    pg = context.new_page()
    pg.on("response", page_log.response)
    pg.on("console", page_log.console)
    pg.on("pageerror", lambda e: page_log.errors.append(f"uncaught: {e}"))
    open_frontend(pg, comfy_server.url)
    yield pg
    context.close()
    assert page_log.failed == [], f"failed requests to fluxloom: {page_log.failed}"
    assert page_log.errors == [], f"console errors: {page_log.errors}"
