"""The official ComfyUI frontend (comfyui-frontend-package, real Chromium) in front of a real
`fluxloom serve --frontend comfyui` with the demo model: it loads without a failed request, lists
fluxloom's nodes, opens a shipped workflow from its templates dialog, runs it (the image lands on
the Save node and in the assets panel), saves with Ctrl+S into fluxloom's saved workflows, keeps
settings across a reload, and shows fluxloom's extension (demo notice, model status, warnings)."""

from __future__ import annotations

import json
import time

import pytest

from tests.frontend.conftest import request
from tests.frontend.frontend_page import APP, open_frontend, open_template, run_and_wait_for_image, shrink

pytestmark = pytest.mark.browser


def test_page_loads_clean_lists_our_nodes_and_shows_the_extension(page, comfy_server):
    # fluxloom's extension: the model manager's status with the demo notice, and the demo toast.
    status = page.locator("#fluxloom-status")
    assert "demo model only: images are noise" in status.text_content()
    assert status.get_attribute("data-demo") == "true"
    assert page.get_by_test_id("toast").get_by_text("fluxloom: demo model only").is_visible()
    # A new page opens fluxloom's two-phase workflow, not the frontend's own default graph.
    types = page.evaluate(f"{APP}.graph.nodes.map(n => n.type)")
    assert {"LoadT5-8bit", "ModelOffload", "FluxSampler", "SaveImage"} <= set(types)
    groups = page.evaluate(f"{APP}.graph.groups.map(g => g.title)")
    assert groups == ["Phase 1: encode", "Phase 2: sample + decode"]
    # A custom node pack's web directory was listed and loaded (with a module it imports).
    assert page.evaluate("window.__webEchoLoaded") == "hello from a custom node's web directory"

    # Every sidebar panel opens without a failed request (the page fixture checks the log).
    for panel in ("Assets (a)", "Model Library (m)", "Workflows (w)", "Apps", "Templates"):
        page.get_by_role("button", name=panel, exact=True).click()
        page.wait_for_load_state("networkidle")
    page.keyboard.press("Escape")  # the templates dialog
    page.get_by_role("button", name="Node Library (n)").click()
    search = page.get_by_placeholder("Search Nodes...")
    search.fill("FluxSampler")
    page.get_by_text("FLUX Sampler").first.wait_for()
    search.fill("Load T5")
    page.get_by_text("Load T5 (8-bit)").first.wait_for()


def test_template_runs_to_an_image_on_the_save_node_and_in_the_assets(page, comfy_server):
    open_template(page, "flux-dev-lowvram-8bit")
    shrink(page)
    # Note every toast as it appears (they go away after a while; a slow run may outlast one).
    page.evaluate(
        """() => { window.__toasts = [];
        new MutationObserver(() => document.querySelectorAll('[data-testid=toast]')
            .forEach(t => window.__toasts.includes(t.textContent) || window.__toasts.push(t.textContent)))
          .observe(document.body, { childList: true, subtree: true, characterData: true }); }"""
    )
    started = time.monotonic()
    src = run_and_wait_for_image(page)
    ran = time.monotonic() - started
    assert "/view?filename=fluxloom-dev_" in src and "type=output" in src, src
    # fluxloom's execution_warning (the workflow names FLUX.1-dev, absent here): a toast, and it
    # stays in the status line until the next run.
    page.wait_for_function("window.__toasts.some(t => t.includes('using the demo model'))", timeout=10_000)
    assert "using the demo model" in page.locator("#fluxloom-status .fluxloom-warning").first.text_content()
    # The model status saw phase 2 arrive, and phase 1's models are gone from the device.
    page.wait_for_function("window.fluxloomStatus.moves.includes('FLUX_MODEL loaded')", timeout=10_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#fluxloom-status .fluxloom-model')].map(m => m.dataset.kind).sort()"
        ".join() === 'FLUX_MODEL,VAE'",
        timeout=10_000,
    )
    # The running phase followed the executing node through the workflow's two phase groups (the
    # cheap loaders of phase 2 may run between phase 1's nodes: they only make handles).
    phases = page.evaluate("window.fluxloomStatus.phases")
    assert phases[0] == "phase 1 (encode)" and phases[-1] == "phase 2 (sample + decode)", phases
    assert "FLUX_MODEL" in page.locator("#fluxloom-status .fluxloom-models").text_content()

    # The job is in the frontend's queue/assets panel, with the image as its preview.
    filename = src.split("filename=")[1].split("&")[0]
    page.get_by_role("button", name="Assets (a)").click()
    page.locator(f"img[src*='{filename}']").first.wait_for(timeout=15_000)
    # The Console panel shows the server's log: the model manager released phase 1's models.
    page.get_by_role("button", name="Toggle Bottom Panel").click()
    page.locator(".xterm-rows").get_by_text("released fluxloom-demo/T5").first.wait_for(timeout=10_000)
    jobs = json.loads(request(comfy_server.url, "GET", "api/jobs?status=completed")[1])["jobs"]
    assert jobs[0]["preview_output"]["filename"] == filename and jobs[0]["status"] == "completed"
    print(f"run from the Run button to the image on the Save node: {ran:.1f} s")


def test_ctrl_s_saves_a_fluxloom_workflow_that_queues_by_name(page, comfy_server, page_log):
    # Saving under the shipped name is refused on purpose (below): the frontend logs it.
    page_log.expected[("POST", "/api/userdata/workflows%2Fflux-schnell.json")] = 403
    page_log.allowed_errors.append("Error storing user data file")
    open_template(page, "flux-schnell")
    shrink(page)
    page.keyboard.press("Control+s")
    name_box = page.get_by_role("dialog").locator("input")
    assert name_box.input_value() == "flux-schnell"
    # The shipped name is read-only: the frontend says so, with the server's reason.
    page.keyboard.press("Enter")
    page.get_by_text("is a shipped workflow (read-only): save it under another name").first.wait_for()
    page.keyboard.press("Control+s")
    name_box.fill("my schnell")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"{APP}.extensionManager.workflow.activeWorkflow?.path === 'workflows/my schnell.json'"
    )

    listed = json.loads(request(comfy_server.url, "GET", "workflows")[1])["workflows"]
    assert {"name": "my schnell", "source": "user", "format": "ui"}.items() <= next(
        w for w in listed if w["name"] == "my schnell"
    ).items()
    status, body = request(
        comfy_server.url, "POST", "workflows/my schnell/queue", {"set": {"FLUX Sampler.seed": 7}}
    )
    assert status == 200, body
    prompt_id = json.loads(body)["prompt_id"]
    deadline = time.monotonic() + 60
    while (job := json.loads(request(comfy_server.url, "GET", f"jobs/{prompt_id}")[1]))["status"] not in (
        "success",
        "error",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "success", job["error"]
    assert job["files"][0]["filename"].endswith(".png")
    # The widgets the test changed in the page are what ran: the saved file is the frontend's.
    saved = json.loads(request(comfy_server.url, "GET", "workflows/my schnell")[1])
    latent = next(n for n in saved["nodes"] if n["type"] == "EmptyLatent16ch")
    assert latent["widgets_values"][:2] == [64, 64]


def test_a_changed_setting_survives_a_reload(page, comfy_server, page_log):
    key = "Comfy.Graph.CanvasInfo"  # the render stats in the canvas corner, on by default
    value = not page.evaluate(f"{APP}.extensionManager.setting.get('{key}')")
    page.evaluate(f"(v) => {APP}.extensionManager.setting.set('{key}', v)", value)
    page.wait_for_function(
        f"(v) => fetch('/api/settings/{key}').then(r => r.json()).then(x => x === v)",
        arg=value,
        timeout=10_000,
    )
    open_frontend(page, comfy_server.url)
    assert page.evaluate(f"{APP}.extensionManager.setting.get('{key}')") == value
    assert json.loads(request(comfy_server.url, "GET", "api/settings")[1])[key] == value
