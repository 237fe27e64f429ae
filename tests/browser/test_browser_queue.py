"""What Queue sends: the canvas posts the UI workflow itself and the server converts it (one
converter, `server.workflow_io.ui_to_api`): the prompt that runs equals the server's conversion of
the workflow kept for the PNG, for the default workflow as posted and for every shipped workflow;
and the seed control acts after each queue, as in ComfyUI."""

from __future__ import annotations

import json
import urllib.request

import pytest

import nodes
from server.prepare import prepare_prompt
from server.runtime import RuntimeConfig, create_runtime
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


def _queue_and_capture(page) -> tuple[dict, dict]:
    """Click Queue; return the POST /prompt body and the prompt that ran (from the history) once
    the run has succeeded."""
    page.evaluate(
        """() => {
            window.__done = 0;
            if (!window.__counting) {
                window.__counting = true;
                window.fluxloom.app.api.addEventListener("execution_success", () => window.__done++);
            }
        }"""
    )
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as resp:
        page.click("#queue-button")
    page.wait_for_function("window.__done > 0", timeout=240_000)
    prompt_id = resp.value.json()["prompt_id"]
    base = resp.value.url.removesuffix("prompt")
    with urllib.request.urlopen(f"{base}history/{prompt_id}") as r:
        ran = json.load(r)[prompt_id]["prompt"][2]
    return json.loads(resp.value.request.post_data), ran


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

    body, ran = _queue_and_capture(page)
    workflow = body["extra_data"]["extra_pnginfo"]["workflow"]
    assert body["prompt"] == workflow  # the UI workflow itself
    assert ran == ui_to_api(workflow, registry)
    assert body["client_id"]
    assert ran[str(sampler)]["inputs"]["seed"] == 1234  # the value shown when queued
    assert widget_value(page, sampler, "seed") == 1235  # then incremented

    _set(page, sampler, "control_after_generate", "randomize")
    _, ran = _queue_and_capture(page)
    assert ran[str(sampler)]["inputs"]["seed"] == 1235
    seed = widget_value(page, sampler, "seed")
    assert isinstance(seed, int) and 0 <= seed <= MAX_SAFE_INTEGER and seed != 1235

    _set(page, sampler, "control_after_generate", "fixed")
    _queue_and_capture(page)
    assert widget_value(page, sampler, "seed") == seed


def test_every_shipped_workflow_is_accepted_as_the_canvas_sends_it(page, server):
    """Each shipped workflow, loaded and serialized by the canvas, passes the server's one
    preparation path (conversion, demo-model substitution, validation) unchanged."""
    registry = nodes.load_all()
    with urllib.request.urlopen(server.url + "workflows") as r:
        listing = json.load(r)["workflows"]
    names = [w["name"] for w in listing if w.get("format") == "ui"]
    assert "flux-dev-lowvram-8bit" in names
    env = create_runtime(
        RuntimeConfig(
            models_dir=server.root / "models",
            output_dir=server.root / "check-out",
            input_dir=server.root / "check-in",
            temp_dir=server.root / "check-temp",
            ensure_demo_model=False,
        )
    ).env
    for name in names:
        # What the menu does, awaited (choosing from the menu is tested with a saved workflow).
        workflow = page.evaluate(
            """async (name) => {
                await window.fluxloom.app.loadServerWorkflow(name);
                return JSON.parse(JSON.stringify(window.fluxloom.app.serialize()));
            }""",
            name,
        )
        assert {n["type"] for n in workflow["nodes"]} >= {"FluxSampler", "EncodePrompt"}, name
        prepared = prepare_prompt(workflow, registry, env)
        assert prepared.extra_data["extra_pnginfo"]["workflow"] == workflow, name
        assert prepared.prompt.keys() == ui_to_api(workflow, registry).keys(), name
