"""Screenshots of the official ComfyUI frontend running fluxloom, for docs/comfyui-frontend.md.

    python tests/frontend/screenshots.py [--out docs/screenshots]

Starts its own `fluxloom serve --frontend comfyui` (demo model, temporary folders) and real
Chromium, and writes comfyui-frontend-templates.png, comfyui-frontend-run.png,
comfyui-frontend-assets.png and comfyui-frontend-nodes.png. Not a test: tests never write into
docs/ (`make screenshots` runs this)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.browser.conftest import CHROMIUM, _free_port, _wait_ready  # noqa: E402
from tests.frontend.frontend_page import APP, open_frontend, open_template, run_and_wait_for_image, shrink  # noqa: E402

# Full node drawing at the zoom that fits a whole workflow, and no first-run tutorial.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Notification.ShowVersionUpdates": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
}


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "server.cli", "serve", "--frontend", "comfyui", "--port", str(port)]
    cmd += ["--models", str(root / "models"), "--data-dir", str(root / "data")]
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    _wait_ready(url, proc, log)
    body = json.dumps(SETTINGS).encode()
    urllib.request.urlopen(urllib.request.Request(url + "api/settings", data=body, method="POST")).read()
    return proc, url


def take(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        open_frontend(page, url)
        page.get_by_role("button", name="Templates", exact=True).click()
        page.get_by_text("flux-dev-lowvram-8bit", exact=True).first.wait_for()
        page.wait_for_function(
            "[...document.images].filter(i => i.src.includes('/templates/')).every(i => i.complete)"
        )
        page.screenshot(path=str(out / "comfyui-frontend-templates.png"))
        page.keyboard.press("Escape")

        open_template(page, "flux-dev-lowvram-8bit")
        shrink(page, size=256, steps=4)
        run_and_wait_for_image(page, size=256, timeout=240_000)
        page.wait_for_function("window.fluxloomStatus.moves.includes('VAE loaded')")
        page.set_viewport_size({"width": 1920, "height": 1000})
        page.wait_for_timeout(300)
        page.evaluate(f"{APP}.canvas.ds.scale = 0.44; {APP}.canvas.ds.offset = [160, 500]")
        page.evaluate(f"{APP}.canvas.setDirty(true, true)")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "comfyui-frontend-run.png"))

        page.get_by_role("button", name="Assets (a)").click()
        page.wait_for_timeout(1500)  # the assets panel's thumbnails fade in
        page.screenshot(path=str(out / "comfyui-frontend-assets.png"))

        page.get_by_role("button", name="Node Library (n)").click()
        page.get_by_text("flux", exact=True).first.click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "comfyui-frontend-nodes.png"))
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fluxloom-shots-") as tmp:
        proc, url = serve(Path(tmp))
        try:
            take(url, args.out)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"screenshots written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
