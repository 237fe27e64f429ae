"""The cost of live previews: FluxSampler through the executor with previews on vs off.

The medium random FLUX model of bench/sampler.py (preset "medium", built once into bench/results/)
samples the same size and steps with the same prompt embeddings; "on" runs hand the executor the
server's preview path (server/previews.py: throttled, latent → RGB, JPEG on the background
thread) and a sink that builds the websocket frame as the hub does, and wait for the last frame
to be encoded before the clock stops; "off" runs have no preview sink (`--preview-method none`).
Runs alternate, each with a new seed (so the sampler is never answered from the cache); prints the
medians and on / off, of wall time and of the process's CPU time (all its threads: the encoder's
work counts, other processes' load does not — the steadier figure on a shared machine). Target:
ratio <= 1.03. `--every-step` also times previews of every step
(no throttle), to show what the throttle saves.

    .venv/bin/python bench/previews.py [--repeats 7] [--size 128] [--steps 8] [--threads N] [--every-step]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.sampler import RESULTS, bench_prompt, ensure_model  # noqa: E402
from server import events  # noqa: E402
from server.previews import PreviewRenderer, capture, encode_jpeg, image  # noqa: E402
from server.runtime import RuntimeConfig, create_runtime  # noqa: E402


class FrameSink:
    """What the hub would send: the type 4 frame of each preview (counted, not sent)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def __call__(self, metadata: dict, jpeg: bytes) -> None:
        frame = events.preview_frame(jpeg, metadata)
        self.frames += 1
        self.bytes += len(frame)


def timed_run(
    rt, prompt: dict, prompt_id: str, renderer: PreviewRenderer | None, sink: FrameSink
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one run."""
    t0, c0 = time.perf_counter(), time.process_time()
    if renderer is None:
        result = rt.executor.execute(prompt, prompt_id)
    else:
        previews = renderer.for_prompt(prompt_id, sink)
        result = rt.executor.execute(prompt, prompt_id, previews.wrap(lambda e, d: None), None, previews)
        renderer.idle()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not result.ok or set(result.executed) != {"sample", "show"}:
        raise SystemExit(f"expected only the sampler to run, got {result.status} {result.executed}")
    return seconds, cpu


def preview_costs(size: int, repeats: int = 50) -> tuple[float, float]:
    """Median seconds of one preview of a run of this image size: (capture, on the sampling
    thread; enlarge + JPEG, on the encoder thread). Random latents: a real image's JPEG is
    smaller and quicker."""
    latent = torch.randn(1, 16, size // 8, size // 8)
    captures, encodes = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        captured = capture(latent)
        t1 = time.perf_counter()
        encode_jpeg(image(captured))
        captures.append(t1 - t0)
        encodes.append(time.perf_counter() - t1)
    return statistics.median(captures), statistics.median(encodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--max-sequence-length", type=int, default=64)
    ap.add_argument("--prompt", default="a photo of a cat holding a sign that says hello world")
    ap.add_argument("--models", type=Path, default=RESULTS / "models")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--every-step", action="store_true", help="also time previews of every step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    ensure_model(args.models)
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
    variants: dict[str, PreviewRenderer | None] = {"off": None, "on": PreviewRenderer("auto")}
    if args.every_step:
        variants["every step"] = PreviewRenderer("auto", min_interval_s=0)
    sinks = {name: FrameSink() for name in variants}
    warm = rt.executor.execute(bench_prompt(args, seed=0), "warm-up")  # loads the models, encodes once
    if not warm.ok:
        raise SystemExit(f"the warm-up run failed: {warm.error['exception_message']}")
    setup = time.perf_counter() - started

    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    seed = 1000
    for i in range(args.repeats):
        # Rotate which variant goes first, so that none always runs on a warmer machine.
        names = list(variants)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            seed += 1
            prompt = bench_prompt(args, seed)
            wall, used = timed_run(rt, prompt, f"bench-{seed}", variants[name], sinks[name])
            times[name].append(wall)
            cpu[name].append(used)
    report(args, variants, times, cpu, sinks)
    print(f"  setup (model build/load, warm-up): {setup:.1f} s")
    for renderer in variants.values():
        if renderer is not None:
            renderer.close()


def report(args: argparse.Namespace, variants: dict, times: dict, cpu: dict, sinks: dict) -> None:
    off, cpu_off = statistics.median(times["off"]), statistics.median(cpu["off"])
    print(
        f"live previews, FluxSampler via the executor, medium random model, {args.size}x{args.size}, "
        f"{args.steps} steps, {args.dtype}, {args.repeats} alternating runs, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, renderer in variants.items():
        med, used, sink = statistics.median(times[name]), statistics.median(cpu[name]), sinks[name]
        line = f"  previews {name:<10} median {med * 1000:7.0f} ms (min {min(times[name]) * 1000:.0f}), "
        line += f"CPU {used * 1000:7.0f} ms"
        if renderer is not None:
            size = sink.bytes / max(1, sink.frames) / 1024
            count = sink.frames / args.repeats
            line += f"  {count:4.1f} frames/run of {size:.1f} KiB; on / off {med / off:.3f}"
            line += f", CPU {used / cpu_off:.3f}"
        print(line)
    for size in sorted({args.size, 1024}):
        grab, encode = preview_costs(size)
        print(
            f"  one preview of a {size}x{size} run: {grab * 1000:.2f} ms on the sampling thread, "
            f"{encode * 1000:.2f} ms enlarging + JPEG on the encoder thread"
        )
    fastest = min(times["on"]) / min(times["off"])
    cpu_ratio = statistics.median(cpu["on"]) / cpu_off
    print(
        f"  ratio previews on / off: {statistics.median(times['on']) / off:.3f}  (target <= 1.03); "
        f"fastest runs {fastest:.3f}; CPU time {cpu_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
