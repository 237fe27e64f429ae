"""The shipped workflows: their UI-format structure, that each runs to completion through
`fluxloom run` with only the demo model installed, and that the two-phase flow never holds T5 and
the transformer on the device at once (from the model manager's own accounting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import nodes
from nodes.flux.demo import DEMO_NAME
from server.runtime import RuntimeConfig, create_runtime
from server.workflow_io import WORKFLOWS_DIR, apply_overrides, load_workflow, to_api

SHIPPED = ("flux-dev-lowvram-8bit", "flux-schnell", "flux-img2img")


def runtime(tmp_path, models_dir, **budgets):
    config = RuntimeConfig(
        models_dir=models_dir,
        output_dir=tmp_path / "out",
        input_dir=tmp_path / "in",
        temp_dir=tmp_path / "temp",
        ensure_demo_model=False,
        **budgets,
    )
    return create_runtime(config)


def small(prompt: dict, **extra) -> dict:
    """The shipped prompt at a size that runs in a second or two."""
    overrides = {"EmptyLatent16ch.width": 128, "EmptyLatent16ch.height": 128, "FluxSampler.steps": 3}
    overrides = {
        k: v for k, v in overrides.items() if k.split(".")[0] in {n["class_type"] for n in prompt.values()}
    }
    by_type = {}
    for nid, node in prompt.items():
        by_type.setdefault(node["class_type"], nid)
    return apply_overrides(
        prompt,
        {f"{by_type[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in {**overrides, **extra}.items()},
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_ui_format_structure(name):
    ui = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())
    registry = nodes.load_all()
    assert ui["version"] == 0.4 and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == len(ui["links"])
    assert [g["title"] for g in ui["groups"]] == ["Phase 1: encode", "Phase 2: sample + decode"]
    by_id = {n["id"]: n for n in ui["nodes"]}
    for n in ui["nodes"]:
        d = registry.get(n["type"])
        assert d is not None, n["type"]
        assert {
            "id",
            "type",
            "pos",
            "size",
            "flags",
            "order",
            "mode",
            "inputs",
            "outputs",
            "properties",
        } <= set(n)
        expected = sum(2 if getattr(w.spec, "control_after_generate", False) else 1 for w in d.widgets())
        assert len(n["widgets_values"]) == expected, n["type"]
    sampler = next(n for n in ui["nodes"] if n["type"] == "FluxSampler")
    assert sampler["widgets_values"][1] == "fixed"  # the seed's control value follows the seed
    for lid, o_id, o_slot, t_id, t_slot, _type in ui["links"]:
        assert by_id[t_id]["inputs"][t_slot]["link"] == lid and lid in by_id[o_id]["outputs"][o_slot]["links"]
        assert by_id[o_id]["pos"][0] < by_id[t_id]["pos"][0]  # laid out left to right
    # The API twin is what the UI format converts to.
    api = json.loads((WORKFLOWS_DIR / f"{name}.api.json").read_text())
    assert api == to_api(ui, registry)


def test_lowvram_workflow_settings():
    api = json.loads((WORKFLOWS_DIR / "flux-dev-lowvram-8bit.api.json").read_text())
    by_type = {}
    for node in api.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    assert by_type["LoadT5-8bit"][0]["quantization"] == "int8 (bitsandbytes)"
    assert by_type["LoadFluxTransformer"][0]["quantization"] == "int8 (bitsandbytes)"
    assert by_type["LoadFluxTransformer"][0]["source"] == "FLUX.1-dev"
    (sampler,) = by_type["FluxSampler"]
    assert (sampler["steps"], sampler["guidance"], sampler["seed"], sampler["true_cfg_scale"]) == (
        20,
        3.5,
        0,
        1.0,
    )
    assert by_type["EmptyLatent16ch"][0]["width"] == by_type["EmptyLatent16ch"][0]["height"] == 1024
    assert len(by_type["ModelOffload"]) == 2


def test_two_phase_never_holds_t5_and_transformer_together(tmp_path, models_dir):
    rt = runtime(tmp_path, models_dir)
    prompt = small(to_api(load_workflow("flux-dev-lowvram-8bit"), rt.registry))
    result = rt.executor.execute(prompt, "two-phase")
    assert result.ok, result.error
    manager = rt.env.models
    sets = manager.device_kind_sets()
    assert any("T5" in s for s in sets) and any("FLUX_MODEL" in s for s in sets)
    assert not any("T5" in s and "FLUX_MODEL" in s for s in sets)
    assert not any("CLIP" in s and "FLUX_MODEL" in s for s in sets)
    actions = [(e.action, e.kind) for e in manager.events]
    assert actions.index(("release", "T5")) < actions.index(("load", "FLUX_MODEL"))
    assert "FLUX_MODEL" in manager.peak_on_device or "T5" in manager.peak_on_device
    # A re-run is answered from the caches: nothing is loaded again.
    loads = len([e for e in manager.events if e.action == "load"])
    again = rt.executor.execute(prompt, "again")
    assert again.ok and len([e for e in manager.events if e.action == "load"]) == loads


def test_budget_alone_keeps_the_phases_apart(tmp_path, models_dir):
    """Without ModelOffload nodes, a device budget that holds one phase but not both makes the
    manager move the text encoders out before the transformer comes in."""
    probe = runtime(tmp_path / "probe", models_dir)
    prompt = small(to_api(load_workflow("flux-dev-lowvram-8bit"), probe.registry))
    for node in prompt.values():
        if "quantization" in node["inputs"]:
            node["inputs"]["quantization"] = "none"
    assert probe.executor.execute(prompt, "probe").ok
    size = {e.kind: e.bytes for e in probe.env.models.events if e.action == "load"}
    # Bypass the two ModelOffload nodes: the sampler takes the conditioning straight from
    # EncodePrompt.
    encode = next(nid for nid, n in prompt.items() if n["class_type"] == "EncodePrompt")
    sampler = next(n for n in prompt.values() if n["class_type"] == "FluxSampler")
    sampler["inputs"]["positive"] = [encode, 0]
    prompt = {nid: n for nid, n in prompt.items() if n["class_type"] != "ModelOffload"}
    budget = max(size["CLIP"] + size["T5"], size["FLUX_MODEL"] + size["VAE"]) + 4096
    assert budget < sum(size.values())
    rt = runtime(tmp_path / "budget", models_dir, vram_budget_bytes=budget)
    assert rt.executor.execute(prompt, "budget").ok
    manager = rt.env.models
    # Never both phases at once (the demo's encoders, with their real vocabularies, outweigh its
    # tiny transformer: it is not always T5 that has to leave).
    assert not any({"CLIP", "T5", "FLUX_MODEL"} <= set(s) for s in manager.device_kind_sets())
    offloads = [e for e in manager.events if e.action == "offload"]
    assert offloads and {e.kind for e in offloads} <= {"CLIP", "T5"}
    assert all("making room" in e.reason for e in offloads)
    assert manager.peak_device_bytes <= budget


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_runs_with_only_the_demo_model(tmp_path, models_dir, name):
    """`fluxloom run NAME --models DIR`, exactly as a user types it, at the workflow's own
    settings (1024x1024, 20 steps for dev; img2img with fewer steps)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "server.cli", "run", name, "--models", str(models_dir), "--json"]
    cmd += ["--output-dir", str(out), "--input-dir", str(tmp_path / "in")]
    if name == "flux-img2img":
        cmd += ["--set", "8.steps=5"]  # 20 steps of 512x512 add a minute on a 2-core machine
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "success"
    (png,) = result["files"]
    assert os.path.getsize(png) > 0 and png.startswith(str(out))
    assert f"using the demo model {DEMO_NAME}" in proc.stderr
