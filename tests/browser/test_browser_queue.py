"""What Queue sends: the API prompt the canvas builds equals the server's own conversion of the UI
workflow it sends along (`server.workflow_io.ui_to_api`), for the default workflow as posted and
for every shipped workflow; and the seed control acts after each queue, as in ComfyUI."""

from __future__ import annotations

import json
import urllib.request

import pytest

import nodes
from server.workflow_io import ui_to_api
from tests.browser.canvas import evaluate, nodes_of_type, widget_value

pytestmark = pytest.mark.browser
MAX_SAFE_INTEGER = 2**53 - 1


def _set(page, node_id: int, name: str, value) -> None:
    evaluate(
        page,
        "window.fluxloom.graph.getNodeById(arg.id).widgets.find(w => w.name === arg.name).value = arg.value;",
        {"id": node_id, "name": name, "value": value},
    )


def _queue_and_capture(page) -> dict:
    """Click Queue; return the POST /prompt body once the run has succeeded."""
    page.evaluate(
        """() => {
            window.__done = 0;
            if (!window.__counting) {
                window.__counting = true;
                window.fluxloom.app.api.addEventListener("execution_success", () => window.__done++);
            }
        }"""
    )
    with page.expect_request(lambda r: r.url.endswith("/prompt") and r.method == "POST") as req:
        page.click("#queue-button")
    page.wait_for_function("window.__done > 0", timeout=240_000)
    return json.loads(req.value.post_data)


def test_posted_prompt_matches_the_server_conversion_and_seed_control_follows(page):
    registry = nodes.load_all()
    sampler = nodes_of_type(page, "FluxSampler")[0]
    latent = nodes_of_type(page, "EmptyLatent16ch")[0]
    # Small and short, so the runs take a moment on a CPU.
    _set(page, latent, "width", 64)
    _set(page, latent, "height", 64)
    _set(page, sampler, "steps", 2)
    _set(page, sampler, "seed", 1234)
    _set(page, sampler, "control_after_generate", "increment")

    body = _queue_and_capture(page)
    workflow = body["extra_data"]["extra_pnginfo"]["workflow"]
    assert body["prompt"] == ui_to_api(workflow, registry)
    assert body["client_id"]
    assert body["prompt"][str(sampler)]["inputs"]["seed"] == 1234  # the value shown when queued
    assert widget_value(page, sampler, "seed") == 1235  # then incremented

    _set(page, sampler, "control_after_generate", "randomize")
    body = _queue_and_capture(page)
    assert body["prompt"][str(sampler)]["inputs"]["seed"] == 1235
    seed = widget_value(page, sampler, "seed")
    assert isinstance(seed, int) and 0 <= seed <= MAX_SAFE_INTEGER and seed != 1235

    _set(page, sampler, "control_after_generate", "fixed")
    _queue_and_capture(page)
    assert widget_value(page, sampler, "seed") == seed


def test_every_shipped_workflow_converts_like_the_server(page, server):
    registry = nodes.load_all()
    with urllib.request.urlopen(server.url + "workflows") as r:
        listing = json.load(r)["workflows"]
    names = [w["name"] for w in listing if w.get("format") == "ui"]
    assert "flux-dev-lowvram-8bit" in names
    for name in names:
        # What the menu does, awaited (choosing from the menu is tested with a saved workflow).
        workflow, prompt = page.evaluate(
            """async (name) => {
                await window.fluxloom.app.loadServerWorkflow(name);
                const { workflowToPrompt } = await import("/js/convert.js");
                const wf = JSON.parse(JSON.stringify(window.fluxloom.app.serialize()));
                return [wf, workflowToPrompt(wf, window.fluxloom.app.objectInfo)];
            }""",
            name,
        )
        assert {n["type"] for n in workflow["nodes"]} >= {"FluxSampler", "EncodePrompt"}, name
        assert prompt == ui_to_api(workflow, registry), name
