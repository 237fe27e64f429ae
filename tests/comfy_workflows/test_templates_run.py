"""The five FLUX.1 text-to-image templates of ComfyUI's template package run to completion on a
machine with only the demo model (its pipeline folder and ComfyUI single files, as `fluxloom
demo-model --format comfyui` writes them): as `fluxloom run TEMPLATE.json --set ...` subprocesses,
and as the API prompt ComfyUI's frontend sends to `POST /prompt` on a real server. Each PNG
carries the prompt and the workflow, under ComfyUI's SaveImage name, and the demo substitution is
said. Kept small: 64x64 and one or two steps, set on the latent node and the sampler (inside a
subgraph by the node's `outer:inner` id, or by its title)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path

import pytest
from PIL import Image

from server.workflow_io import apply_overrides, parse_override, to_api
from tests.comfy_workflows.conftest import TEXT_TO_IMAGE_TEMPLATES, load_template
from tests.server.conftest import Api

SIZE = 64
# Per template: the overrides that make it small (the commands of docs/comfyui.md).
SMALL = {
    "flux_schnell": ("27.width=64", "27.height=64", "31.steps=1"),
    "flux_dev_checkpoint_example": (
        "EmptySD3LatentImage.width=64",
        "EmptySD3LatentImage.height=64",
        "KSampler.steps=1",
    ),
    "flux_dev_full_text_to_image": ("194:48.width=64", "194:48.height=64", "194:50.steps=2"),
    "flux_schnell_full_text_to_image": ("27.width=64", "27.height=64", "KSampler.steps=1"),
    "flux1_krea_dev": ("200:196.width=64", "200:196.height=64", "200:197.steps=1"),
}
# Their SaveImage's filename_prefix.
PREFIX = {
    "flux_schnell": "ComfyUI",
    "flux_dev_checkpoint_example": "Flux.1_Dev",
    "flux_dev_full_text_to_image": "ComfyUI",
    "flux_schnell_full_text_to_image": "ComfyUI",
    "flux1_krea_dev": "flux_krea",
}
DEMO_WARNING = re.compile(r"'[^']+' is not installed; using the demo model fluxloom-demo")
TIMEOUT = 300


def template_file(name: str) -> Path:
    path = resources.files("comfyui_workflow_templates_json") / "templates" / f"{name}.json"
    return Path(str(path))


def fluxloom() -> list[str]:
    """The installed `fluxloom` console script beside this interpreter."""
    script = Path(sys.executable).with_name("fluxloom")
    assert script.is_file(), f"no fluxloom console script beside {sys.executable} (make install)"
    return [str(script)]


def check_png(png: Path, name: str, workflow: dict) -> dict:
    """The PNG is the small image, with the workflow and the prompt it ran; returns the prompt."""
    with Image.open(png) as img:
        assert img.size == (SIZE, SIZE)
        text = dict(img.text)
    assert json.loads(text["workflow"]) == workflow
    prompt = json.loads(text["prompt"])
    latent = [n for n in prompt.values() if n["class_type"] == "EmptySD3LatentImage"]
    assert [(n["inputs"]["width"], n["inputs"]["height"]) for n in latent] == [(SIZE, SIZE)]
    assert any(n["class_type"] == "SaveImage" for n in prompt.values())
    return prompt


# --- fluxloom run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_runs(demo_models, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every template through `fluxloom run`, the five processes side by side (each pays the
    libraries' import time, which dominates)."""
    work = tmp_path_factory.mktemp("templates-cli")
    started = {}
    for name in TEXT_TO_IMAGE_TEMPLATES:
        out = work / name / "output"
        sets = [arg for override in SMALL[name] for arg in ("--set", override)]
        command = [*fluxloom(), "run", str(template_file(name)), "--models", str(demo_models)]
        command += ["--output-dir", str(out), "--input-dir", str(work / name / "input"), *sets]
        started[name] = (
            subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            out,
        )
    runs = {}
    for name, (proc, out) in started.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        runs[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out)
    return runs


@pytest.mark.parametrize("name", TEXT_TO_IMAGE_TEMPLATES)
def test_fluxloom_run_completes_the_template(name, cli_runs):
    run, out = cli_runs[name]
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.split() == [str(out / f"{PREFIX[name]}_00001_.png")]  # ComfyUI's SaveImage name
    assert DEMO_WARNING.search(run.stderr), run.stderr[-4000:]
    check_png(out / f"{PREFIX[name]}_00001_.png", name, load_template(name))


# --- POST /prompt ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEXT_TO_IMAGE_TEMPLATES)
def test_post_prompt_runs_the_template_in_api_format(name, app_server):
    """What ComfyUI's frontend sends: the API prompt (converted here with the server's own
    conversion, inlined subgraphs' nodes as `outer:inner`) and the UI workflow for the PNG."""
    registry = app_server.runtime.registry
    workflow = load_template(name)
    small = dict(parse_override(o) for o in SMALL[name])
    prompt = apply_overrides(to_api(workflow, registry), small, registry)
    api = Api(app_server.url)
    body = {
        "prompt": prompt,
        "client_id": uuid.uuid4().hex,
        "extra_data": {"extra_pnginfo": {"workflow": workflow}},
    }
    answer = api.post("/prompt", body)
    assert answer.status == 200, answer.body
    assert any(DEMO_WARNING.search(w) for w in answer.json()["warnings"]), answer.json()
    job = api.wait_job(answer.json()["prompt_id"], timeout=TIMEOUT)
    assert job["status"] == "success", job.get("error")
    (saved,) = job["files"]
    assert re.fullmatch(rf"{re.escape(PREFIX[name])}_\d{{5}}_\.png", saved["filename"])
    ran = check_png(Path(saved["path"]), name, workflow)
    assert set(ran) == set(prompt)  # the nodes it ran: the template's, with their ids
