"""Server throughput and latency: N prompts of a small cache-able graph queued by concurrent
websocket clients against a real `fluxloom serve` subprocess, measured from POST /prompt to the
prompt's `execution_success`; and the same prompts through an in-process Executor as the
reference (what the HTTP + websocket + SQLite layers cost on top of the engine).

    python bench/server.py [--prompts 200] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prompt(i: int) -> dict:
    """A constant node (cached after the first prompt), one that varies with i (50 distinct
    values, so later prompts are answered from the cache), and an output node."""
    return {
        "1": {"class_type": "IntegerMath", "inputs": {"a": 7, "b": 5, "operation": "multiply"}},
        "2": {"class_type": "IntegerMath", "inputs": {"a": ["1", 0], "b": i % 50, "operation": "add"}},
        "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
    }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def line(name: str, n: int, seconds: float, latencies: list[float]) -> str:
    return (
        f"{name:<34} {n / seconds:9.1f} prompts/s   p50 {pct(latencies, 0.5) * 1e3:8.2f} ms"
        f"   p99 {pct(latencies, 0.99) * 1e3:8.2f} ms"
    )


async def client(base: str, ids: list[int], closed_loop: bool, lat: dict[str, float], sent: dict) -> None:
    cid = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}/ws?clientId={cid}") as ws:
        await ws.receive()  # status on connect
        waiting: dict[str, float] = {}

        async def post(i: int) -> None:
            t = time.perf_counter()
            async with session.post(f"{base}/prompt", json={"prompt": prompt(i), "client_id": cid}) as r:
                pid = (await r.json())["prompt_id"]
            waiting[pid] = t
            sent[pid] = t

        async def finished() -> None:
            while True:
                msg = json.loads((await ws.receive()).data)
                if msg["type"] == "execution_success" and msg["data"]["prompt_id"] in waiting:
                    pid = msg["data"]["prompt_id"]
                    lat[pid] = time.perf_counter() - waiting.pop(pid)
                    return

        if closed_loop:
            for i in ids:
                await post(i)
                await finished()
        else:
            for i in ids:
                await post(i)
            for _ in ids:
                await finished()


async def run_clients(base: str, n: int, clients: int, closed_loop: bool) -> tuple[float, list[float]]:
    lat: dict[str, float] = {}
    sent: dict[str, float] = {}
    t0 = time.perf_counter()
    await asyncio.gather(
        *(client(base, list(range(c, n, clients)), closed_loop, lat, sent) for c in range(clients))
    )
    return time.perf_counter() - t0, list(lat.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp / "data"),
            "--models",
            str(tmp / "models"),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((tmp / "serve.log").read_text()[-2000:]) from None
            time.sleep(0.2)
    raise TimeoutError("server did not start")


def reference(n: int) -> tuple[float, list[float]]:
    """The same prompts, validated and executed in this process, one after another."""
    import nodes
    from nodes.base import NodeEnv
    from server.cache import OutputCache
    from server.executor import Executor

    registry = nodes.load_all()
    executor = Executor(registry, NodeEnv(), OutputCache(2**30))
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        assert executor.execute(prompt(i), f"ref-{i}").ok
        lat.append(time.perf_counter() - t)
    return time.perf_counter() - t0, lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    n, c = args.prompts, args.clients
    with tempfile.TemporaryDirectory() as d:
        proc, base = start_server(Path(d))
        try:
            asyncio.run(run_clients(base, 20, 2, True))  # warm-up (imports, first cache fill)
            burst_s, burst = asyncio.run(run_clients(base, n, c, closed_loop=False))
            loop_s, closed = asyncio.run(run_clients(base, n, c, closed_loop=True))
        finally:
            proc.terminate()
            proc.wait(30)
    ref_s, ref = reference(n)
    print(f"server bench: {n} prompts, {c} concurrent websocket clients, graph of 3 cache-able nodes")
    print(line(f"server, burst ({c} clients)", n, burst_s, burst))
    print(line(f"server, closed loop ({c} clients)", n, loop_s, closed))
    print(line("in-process executor (reference)", n, ref_s, ref))
    print(f"ratio server/reference throughput: burst {ref_s / burst_s:.3f}, closed loop {ref_s / loop_s:.3f}")


if __name__ == "__main__":
    main()
