"""A normal (non-editable) install works from anywhere: a wheel built from this tree, installed
into a fresh virtual environment, serves the canvas, its JavaScript (and litegraph's) and the
shipped workflows when `fluxloom serve` runs from an unrelated directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from tests.server.serve_process import free_port

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("server", "nodes", "web", "workflows", "pyproject.toml", "setup.py", "README.md")


def _copy_tree(dest: Path) -> Path:
    """The files a wheel is built from (a copy, so the build never writes into the checkout)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, symlinks=False)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv with only fluxloom's wheel installed; the dependencies (torch, diffusers...) are
    borrowed from this interpreter's site-packages through a .pth line, which does not carry the
    editable install's import hook, so `server` and `nodes` can only come from the wheel."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --target: files into the fresh site-packages only. (--prefix, and --python with a venv of
    # this same interpreter, make pip uninstall *this* venv's editable fluxloom first.)
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True)
    return venv


@pytest.mark.slow
def test_wheel_serves_canvas_and_workflows_from_any_directory(tmp_path):
    src = _copy_tree(tmp_path / "src")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("fluxloom-*.whl")
    venv = _fresh_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import server, nodes; print(server.__file__, nodes.__file__)"],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(REPO) not in where and str(venv) in where, where

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        # The installed console script (--target puts it in site-packages/bin), run by the fresh
        # venv's python: its shebang names the interpreter pip ran under.
        [
            venv / "bin" / "python",
            _site(venv) / "bin" / "fluxloom",
            "serve",
            "--port",
            str(port),
            "--models",
            "models",
        ]
        + ["--data-dir", "data"],
        cwd=elsewhere,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, proc, tmp_path / "serve.log")
        page = _get(base + "/")
        assert b"<title>fluxloom</title>" in page and b"/js/app.js" in page
        assert b"LGraphCanvas" in _get(base + "/js/app.js")
        assert b"LGraph" in _get(base + "/node_modules/@comfyorg/litegraph/dist/litegraph.es.js")
        names = {w["name"] for w in json.loads(_get(base + "/workflows"))["workflows"]}
        assert {"flux-dev-lowvram-8bit", "flux-schnell", "flux-img2img"} <= names
        shipped = json.loads(_get(base + "/workflows/flux-dev-lowvram-8bit"))
        assert shipped["nodes"]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _site(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    return site


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200, url
        return r.read()


def _wait(base: str, proc: subprocess.Popen, log: Path) -> None:
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fluxloom serve exited: {log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(base + "/prompt", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"fluxloom serve did not answer: {log.read_text(errors='replace')}")
