"""What several test folders share: one Chromium for the whole session (Playwright's sync API
runs a single instance per thread, so tests/browser (fluxloom's canvas) and tests/frontend (the
official ComfyUI frontend) must use the same one), and one models folder with the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> Path:
    """One models folder for the session with the demo pipeline and the same weights as ComfyUI
    single files (what `fluxloom demo-model --format comfyui` writes): a machine with only the
    demo model, for tests/singlefile and tests/comfy_workflows alike."""
    from nodes.flux.demo_files import ensure_demo_files

    root = tmp_path_factory.mktemp("demo-models")
    ensure_demo_files(root)
    return root


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium (make chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()
