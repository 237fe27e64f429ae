"""Browser tests: a real `fluxloom serve` on 127.0.0.1 (a subprocess with its own models and data
folders, so it builds and uses the demo model) and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("FLUXLOOM_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
# Tests leave the checkout as they found it: screenshots go to a temporary folder unless
# `make screenshots` points this at docs/screenshots to refresh the README's pictures on purpose.
SCREENSHOTS = Path(
    os.environ.get("FLUXLOOM_SCREENSHOTS") or Path(tempfile.gettempdir()) / "fluxloom-screenshots"
)
STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    root: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fluxloom serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "system_stats", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"fluxloom serve did not answer within {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fluxloom-browser")
    port = _free_port()
    log_path = root / "server.log"
    exe = shutil.which("fluxloom", path=str(Path(sys.executable).parent)) or "fluxloom"
    cmd = [exe, "serve", "--port", str(port), "--models", str(root / "models")]
    cmd += ["--data-dir", str(root / "data")]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(url, proc, log_path)
        yield Server(url=url, root=root, process=proc, log_path=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The session's Chromium (`browser`) is tests/conftest.py's: one for every test folder.


@dataclass
class Console:
    errors: list[str] = field(default_factory=list)
    # Chromium itself logs every 4xx/5xx response as a console error ("Failed to load resource").
    # A test that provokes one on purpose (a 400 with validation errors) names its URL here.
    expected_http_errors: list[str] = field(default_factory=list)

    def record(self, message) -> None:
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        if message.text.startswith("Failed to load resource") and any(
            url.endswith(path) for path in self.expected_http_errors
        ):
            return
        self.errors.append(f"{message.text} ({url})" if url else message.text)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser, server: Server, console: Console):
    """A fresh page (own localStorage) on the canvas, ready; fails the test on any console error."""
    context = browser.new_context(viewport={"width": 1600, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.on("console", console.record)
    pg.on("pageerror", lambda e: console.errors.append(f"uncaught: {e}"))
    pg.goto(server.url)
    pg.wait_for_function("document.body.dataset.ready", timeout=30_000)
    assert pg.evaluate("document.body.dataset.ready") == "true", pg.text_content("#status-line")
    yield pg
    context.close()
    assert console.errors == [], f"the page logged console errors: {console.errors}"
