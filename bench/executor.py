"""Executor overhead: a chain of trivial nodes run three ways in one invocation.

1. the node functions called directly in a loop (the reference: zero engine overhead),
2. a first run through the executor (validation, signatures, cache writes, events),
3. a fully cached re-run.

Prints per-node times in µs, the engine's overhead per node, and the ratios.
Targets: < 50 µs overhead per executed node, < 10 µs per node on a fully cached re-run.

    .venv/bin/python bench/executor.py [--nodes 250] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nodes  # noqa: E402
from nodes.base import NodeContext, NodeEnv  # noqa: E402
from server.runtime import RuntimeConfig, create_runtime  # noqa: E402


def chain_prompt(n: int) -> dict:
    """IntegerMath chain: node i adds 1 to node i-1; a ShowValue at the end."""
    prompt = {"0": {"class_type": "IntegerMath", "inputs": {"a": 0, "b": 1, "operation": "add"}}}
    for i in range(1, n):
        prompt[str(i)] = {
            "class_type": "IntegerMath",
            "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"},
        }
    prompt[str(n)] = {"class_type": "ShowValue", "inputs": {"value": [str(n - 1), 0]}}
    return prompt


def direct(n: int, registry) -> float:
    math_fn = registry.get("IntegerMath").run
    show_fn = registry.get("ShowValue").run
    ctx = NodeContext(env=NodeEnv())
    t0 = time.perf_counter()
    value = 0
    value = math_fn(ctx, a=value, b=1, operation="add")[0]
    for _ in range(1, n):
        value = math_fn(ctx, a=value, b=1, operation="add")[0]
    show_fn(ctx, value=value)
    return time.perf_counter() - t0


def app_executor(tmp: Path):
    """A fresh executor set up exactly as `fluxloom serve` / `run` set theirs up (model manager,
    demo-model prompt hook), without writing the demo model."""
    dirs = {name: tmp / name for name in ("models", "output", "input", "temp")}
    config = RuntimeConfig(**{f"{k}_dir": v for k, v in dirs.items()}, ensure_demo_model=False)
    return create_runtime(config).executor


def listener(event: str, data: dict) -> None:
    pass  # the server's listener forwards; here we only pay for the calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    registry = nodes.load_all()
    n, count = args.nodes, args.nodes + 1
    prompt = chain_prompt(n)

    t_direct, t_first, t_cached = [], [], []
    tmp = tempfile.mkdtemp(prefix="fluxloom-bench-")
    for r in range(args.repeats):
        t_direct.append(direct(n, registry))
        ex = app_executor(Path(tmp))
        t0 = time.perf_counter()
        first = ex.execute(prompt, f"first{r}", listener)
        t_first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        again = ex.execute(prompt, f"again{r}", listener)
        t_cached.append(time.perf_counter() - t0)
        assert first.ok and len(first.executed) == count, "first run must execute every node"
        assert again.ok and not again.executed, "re-run must be fully cached"
        assert first.outputs == again.outputs == {str(n): {"text": [str(n)]}}

    per = {
        k: statistics.median(v) / count * 1e6
        for k, v in (("direct", t_direct), ("first", t_first), ("cached", t_cached))
    }
    overhead = per["first"] - per["direct"]
    print(f"graph: {count} nodes (IntegerMath chain + ShowValue), median of {args.repeats} runs")
    print(f"direct calls           {per['direct']:8.2f} µs/node")
    print(
        f"executor, first run    {per['first']:8.2f} µs/node  (overhead {overhead:.2f} µs/node, target < 50)"
    )
    print(f"executor, cached rerun {per['cached']:8.2f} µs/node  (target < 10)")
    print(f"ratio first/direct     {per['first'] / per['direct']:8.1f}x")
    print(f"ratio cached/direct    {per['cached'] / per['direct']:8.1f}x")
    print(f"ratio first/cached     {per['first'] / per['cached']:8.1f}x")
    ok = overhead < 50 and per["cached"] < 10
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
