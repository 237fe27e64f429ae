"""An 8-bit T5 saves memory on the CPU instead of costing it (issue: hardening, fault 7): a T5
from a pipeline folder in int8 used to load at full precision and be quantized afterwards, so its
phase peaked above the unquantized one. It is now read layer by layer and quantized as it comes.
Measured as the peak RSS of a child process that loads the T5 and encodes a prompt, minus the same
for a tiny T5 through the same code (libraries, tokenizer, kernels: what does not grow with the
weights), so that the ratio is about the weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodes.flux import quantization as q
from nodes.flux.demo import PRESETS, _t5, build_t5_tokenizer

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import sys, torch
from nodes.flux.encode import t5_embeds
from nodes.flux.handles import ModelHandle
from nodes.flux.provider import load_handle
loaded = load_handle(ModelHandle("T5", "t5", sys.argv[1], sys.argv[2], "fp32"), torch.device("cpu"))
with torch.no_grad():
    t5_embeds(loaded, "a photo of a cat holding a sign", 64)
"""
# Linux counts the RSS of the process that forked a child into the child's peak (exec records the
# old memory's high-water mark): a child of this big test process would report this process's
# size. So a small wrapper process runs the measured one and reports its reaped child's peak.
WRAPPER = """
import json, resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(json.dumps(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
"""


def t5_only(root: Path, preset: str) -> Path:
    """A pipeline folder holding only a T5 of a demo preset's size."""
    torch.manual_seed(0)
    tokenizer = build_t5_tokenizer()
    _t5(PRESETS[preset], tokenizer).save_pretrained(root / "text_encoder_2", safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer_2")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The benchmark's medium T5 (~380 MB fp32) and a tiny one (the same code, no weights to speak of)."""
    return {preset: t5_only(tmp_path_factory.mktemp(f"t5-{preset}"), preset) for preset in ("medium", "tiny")}


def peak(folder: Path, quantization: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, "-c", CHILD, str(folder), quantization],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def weights_part(folders: dict[str, Path], quantization: str) -> int:
    return peak(folders["medium"], quantization) - peak(folders["tiny"], quantization)


@pytest.mark.slow
def test_int8_t5_phase_peaks_well_below_the_unquantized_one(folders):
    plain = weights_part(folders, q.NONE)
    int8 = weights_part(folders, q.INT8_BNB)
    weights = sum(f.stat().st_size for f in (folders["medium"] / "text_encoder_2").glob("*.safetensors"))
    assert plain > 0.5 * weights  # the measure sees the weights (the embedding is paged in by rows)
    assert int8 < 0.75 * plain, f"int8 T5 phase {int8 / 2**20:.0f} MiB vs unquantized {plain / 2**20:.0f} MiB"
