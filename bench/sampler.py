"""FluxSampler through the executor against diffusers' FluxPipeline, on the same weights.

Both sides sample the same medium-sized random FLUX model (nodes.flux.demo, preset "medium",
built once into bench/results/, which is not committed) with the same prompt embeddings, size,
steps and seed; the models are loaded before timing. fluxloom's side is a whole prompt run by the
executor (validation, cache look-ups, model manager, events) whose only uncached node is
FluxSampler; diffusers' side is `FluxPipeline.__call__(prompt_embeds=..., output_type="latent")`.
Runs alternate, each pair with a new seed; prints both medians and fluxloom / diffusers.
Target: ratio <= 1.02. Every pair's latents are also compared (they must be equal).

    .venv/bin/python bench/sampler.py [--repeats 10] [--size 128] [--steps 4] [--dtype fp32] [--threads N]

On a shared machine, other processes' load moves both sides alike only if it is steady: run it
when the machine is otherwise idle (the setup line says how long building/loading took).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nodes.flux import math as fm  # noqa: E402
from nodes.flux.demo import DEMO_MARKER, PRESETS, build_tiny_flux  # noqa: E402
from server.runtime import RuntimeConfig, create_runtime  # noqa: E402
from server.validation import validate_prompt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = "bench-medium"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def ensure_model(models_dir: Path) -> Path:
    """The medium random pipeline, built on first use and reused while the preset's sizes are
    unchanged (a stamp next to it records them)."""
    path = models_dir / "diffusers" / SOURCE
    stamp = models_dir / f"{SOURCE}.preset.json"
    wanted = json.dumps({"preset": "medium", "sizes": repr(PRESETS["medium"])})
    built = stamp.is_file() and stamp.read_text() == wanted and (path / DEMO_MARKER).is_file()
    if not built:
        print(f"building the medium random FLUX model into {path} (once) ...", flush=True)
        build_tiny_flux(path, seed=0, preset="medium")
        stamp.write_text(wanted)
    return path


def bench_prompt(args: argparse.Namespace, seed: int) -> dict:
    loader = {"source": SOURCE, "dtype": args.dtype}
    quant = {**loader, "quantization": "none"}
    return {
        "clip": {"class_type": "LoadCLIP", "inputs": loader},
        "t5": {"class_type": "LoadT5-8bit", "inputs": quant},
        "flux": {"class_type": "LoadFluxTransformer", "inputs": quant},
        "pos": {
            "class_type": "EncodePrompt",
            "inputs": {
                "clip": ["clip", 0],
                "t5": ["t5", 0],
                "prompt": args.prompt,
                "prompt_2": "",
                "max_sequence_length": args.max_sequence_length,
            },
        },
        "empty": {
            "class_type": "EmptyLatent16ch",
            "inputs": {"width": args.size, "height": args.size, "batch_size": 1},
        },
        "sample": {
            "class_type": "FluxSampler",
            "inputs": {
                "model": ["flux", 0],
                "positive": ["pos", 0],
                "latent": ["empty", 0],
                "seed": seed,
                "steps": args.steps,
                "guidance": 3.5,
                "true_cfg_scale": 1.0,
                "denoise": 1.0,
            },
        },
        "show": {"class_type": "ShowValue", "inputs": {"value": ["sample", 0]}},
    }


def cached_output(rt, prompt: dict, node_id: str):
    vp = validate_prompt(prompt, rt.registry, rt.env)
    return rt.executor.cache.get(rt.executor.signatures(vp)[node_id]).outputs[0]


def time_ours(rt, prompt: dict, prompt_id: str) -> float:
    t0 = time.perf_counter()
    result = rt.executor.execute(prompt, prompt_id)
    seconds = time.perf_counter() - t0
    if set(result.executed) != {"sample", "show"}:
        raise SystemExit(f"expected only the sampler to run, ran {result.executed}")
    return seconds


def time_theirs(pipe, call: dict, seed: int) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        t0 = time.perf_counter()
        images = pipe(**call, generator=fm.seeded_generator(seed)).images
        return time.perf_counter() - t0, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    ap.add_argument("--max-sequence-length", type=int, default=64)
    ap.add_argument("--prompt", default="a photo of a cat holding a sign that says hello world")
    ap.add_argument("--models", type=Path, default=RESULTS / "models")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    from diffusers import FluxPipeline

    path = ensure_model(args.models)
    work = Path(tempfile.mkdtemp(prefix="fluxloom-bench-"))
    rt = create_runtime(
        RuntimeConfig(
            models_dir=args.models,
            output_dir=work / "output",
            input_dir=work / "input",
            temp_dir=work / "temp",
            ensure_demo_model=False,
        )
    )
    pipe = FluxPipeline.from_pretrained(path, dtype=DTYPES[args.dtype])
    pipe.set_progress_bar_config(disable=True)

    # Warm-up: loads every model on fluxloom's side and encodes the prompt once (cached after).
    warm = bench_prompt(args, seed=0)
    result = rt.executor.execute(warm, "warm-up")
    if not result.ok:
        raise SystemExit(f"fluxloom run failed: {result.error['exception_message']}")
    cond = cached_output(rt, warm, "pos")
    embeds = {"prompt_embeds": cond.prompt_embeds, "pooled_prompt_embeds": cond.pooled_prompt_embeds}
    call = dict(
        height=args.size,
        width=args.size,
        num_inference_steps=args.steps,
        guidance_scale=3.5,
        output_type="latent",
        **embeds,
    )
    with torch.no_grad():
        pipe(**call, generator=fm.seeded_generator(0))

    setup = time.perf_counter() - started
    ours, theirs, equal = [], [], True
    for i in range(args.repeats):
        seed = 1000 + i
        prompt = bench_prompt(args, seed)

        # Alternate which side goes first, so that neither always runs on a warmer machine.
        if i % 2 == 0:
            ours.append(time_ours(rt, prompt, f"bench-{i}"))
            seconds, ref = time_theirs(pipe, call, seed)
        else:
            seconds, ref = time_theirs(pipe, call, seed)
            ours.append(time_ours(rt, prompt, f"bench-{i}"))
        theirs.append(seconds)
        h = w = 2 * (args.size // 16)
        equal &= torch.equal(cached_output(rt, prompt, "sample")["samples"], fm.unpack_latents(ref, h, w))

    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"FLUX sampling, medium random model, {args.size}x{args.size}, {args.steps} steps, {args.dtype}, "
        f"T5 {args.max_sequence_length} tokens, {args.repeats} alternating runs, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"  fluxloom (FluxSampler via executor): median {a * 1000:8.1f} ms  (min {min(ours) * 1000:.1f})")
    print(f"  diffusers FluxPipeline:              median {b * 1000:8.1f} ms  (min {min(theirs) * 1000:.1f})")
    print(f"  ratio fluxloom / diffusers: {a / b:.3f}  (target <= 1.02)")
    print(f"  latents equal in every run: {equal}")
    print(f"  setup (model build/load, warm-up): {setup:.1f} s")


if __name__ == "__main__":
    main()
