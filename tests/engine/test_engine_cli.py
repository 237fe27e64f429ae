"""`fluxloom run` and `fluxloom nodes` as a user runs them: a real subprocess, real files."""

import json
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from nodes.image import png_metadata

FLUXLOOM = [sys.executable, "-m", "server.cli"]


def run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([*FLUXLOOM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def math_ui_workflow(a=6, b=7, op="multiply"):
    return {
        "last_node_id": 2,
        "last_link_id": 1,
        "version": 0.4,
        "groups": [],
        "config": {},
        "extra": {},
        "links": [[1, 1, 0, 2, 0, "INT"]],
        "nodes": [
            {
                "id": 2,
                "type": "ShowValue",
                "mode": 0,
                "inputs": [{"name": "value", "type": "*", "link": 1}],
                "outputs": [],
                "widgets_values": [],
                "title": "Answer",
            },
            {
                "id": 1,
                "type": "IntegerMath",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "result", "type": "INT", "links": [1]}],
                "widgets_values": [a, b, op],
                "title": "Calc",
            },
        ],
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One demo model for the module, made the way a user makes it (`fluxloom demo-model`), so
    that `run` does not build its own in every test."""
    path = tmp_path_factory.mktemp("models")
    r = run("demo-model", "--models", str(path), cwd=path)
    assert r.returncode == 0, r.stderr
    assert (path / "diffusers" / "fluxloom-demo" / "model_index.json").is_file()
    return path


@pytest.fixture
def workdir(tmp_path, models):
    (tmp_path / "wf.json").write_text(json.dumps(math_ui_workflow()))
    (tmp_path / "models").symlink_to(models)  # `--models` defaults to ./models
    return tmp_path


def test_run_ui_workflow_prints_result(workdir):
    r = run("run", "wf.json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2: 42"
    assert "Calc" in r.stderr  # progress names the running node by title


def test_run_with_overrides_by_title_and_id_and_json(workdir):
    r = run("run", "wf.json", "--set", "Calc.a=10", "--set", "1.operation=add", "--json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "success" and out["outputs"] == {"2": {"text": ["17"]}}


def test_validation_errors_exit_2_and_name_every_problem(workdir):
    r = run("run", "wf.json", "--set", "Calc.a=x", "--set", "Calc.operation=pow", cwd=workdir)
    assert r.returncode == 2
    assert "node 1 (IntegerMath, 'Calc')" in r.stderr
    assert "invalid_input_type" in r.stderr and "value_not_in_list" in r.stderr and "'pow' not in" in r.stderr
    r = run("run", "wf.json", "--set", "Nobody.a=1", cwd=workdir)
    assert r.returncode == 2 and "no node has id or title 'Nobody'" in r.stderr
    r = run("run", "wf.json", "--set", "Calc.c=1", cwd=workdir)
    assert r.returncode == 2 and "node 1 (IntegerMath) has no input 'c' (inputs: a, b, operation)" in r.stderr
    (workdir / "afile").write_text("")
    r = run("run", "wf.json", "--output-dir", "afile/out", cwd=workdir)
    assert r.returncode == 2 and "cannot set up the folders" in r.stderr and "afile/out" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("run", "missing.json", cwd=workdir)
    assert r.returncode == 2 and "no workflow file or shipped workflow named 'missing.json'" in r.stderr


def test_api_workflow_with_odd_meta_runs(workdir):
    api = {
        "1": {"class_type": "IntegerMath", "inputs": {"a": 2, "b": 3, "operation": "add"}, "_meta": None},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}, "_meta": "not an object"},
    }
    (workdir / "api.json").write_text(json.dumps(api))
    r = run("run", "api.json", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2: 5" and "▶ 1 IntegerMath" in r.stderr


def test_execution_error_exits_1_naming_the_node(workdir):
    r = run("run", "wf.json", "--set", "Calc.b=0", "--set", "Calc.operation=divide", cwd=workdir)
    assert r.returncode == 1
    assert "error in node 1 (IntegerMath, 'Calc'): cannot divide 6 by zero" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_workflow_from_png(workdir):
    png = workdir / "carrier.png"
    Image.new("RGB", (4, 4)).save(png, pnginfo=png_metadata(None, math_ui_workflow(2, 3, "add")))
    r = run("run", "carrier.png", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2: 5"


def test_nodes_command(workdir):
    r = run("nodes", cwd=workdir)
    assert r.returncode == 0 and "IntegerMath  [utils/math]" in r.stdout
    assert "in  operation: one of [add, subtract" in r.stdout
    r = run("nodes", "IntegerMath", "--json", cwd=workdir)
    info = json.loads(r.stdout)
    assert list(info) == ["IntegerMath"] and info["IntegerMath"]["output"] == ["INT"]
    r = run("nodes", "Nope", cwd=workdir)
    assert r.returncode == 2 and "no node type 'Nope'" in r.stderr


def test_help_explains_every_command(workdir):
    r = run("--help", cwd=workdir)
    assert r.returncode == 0
    for cmd in ("serve", "run", "queue", "nodes", "demo-model"):
        assert cmd in r.stdout
    r = run("run", "--help", cwd=workdir)
    text = " ".join(r.stdout.split())
    assert "NODE.INPUT=VALUE" in text and "Exit 0 on success, 2 on validation errors" in text


def test_ctrl_c_interrupts_the_run_cleanly(workdir):
    """Ctrl-C during sampling stops at the next step with a one-line message and exit 130, not
    a KeyboardInterrupt traceback from inside torch."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    sizes = ["--set", "7.width=64", "--set", "7.height=64"]
    args = ["run", "flux-schnell", "--set", "FLUX Sampler.steps=5000", *sizes]
    proc = subprocess.Popen([*FLUXLOOM, *args], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    seen = ""
    for line in proc.stderr:  # wait until the sampler node has started
        seen += line
        if "▶ 8 FLUX Sampler" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, seen + rest
    assert "interrupted" in rest and "Traceback" not in rest and "KeyboardInterrupt" not in rest


def test_parse_size_accepts_units_and_rejects_nonsense():
    import argparse

    from server.cli import parse_size

    assert parse_size("16G") == 16 * 2**30 and parse_size("1.5GiB") == 3 * 2**29 and parse_size("512") == 512
    for bad in ("x", "nan", "inf", "1e400", "-1G"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
            parse_size(bad)
