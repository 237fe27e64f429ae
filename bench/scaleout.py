"""Distributed mode: throughput with 1, 2 and 4 workers, and what the queue adds per prompt.

A real `redis-server` (append-only file on, `appendfsync everysec`), one `fluxloom serve
--queue` front end and `fluxloom worker` processes. The prompts sleep (SlowCount, from
tests/server/server_nodes.py) so that the measure is the queue, not the CPU:

- throughput: a burst of 12·N prompts of `--sleep` seconds each with N workers, from the first
  POST to the last `execution_success`; ratio = throughput(N) / (N · throughput(1)), target ≥ 0.9;
- dispatch overhead: one client, one prompt at a time (a 2-node prompt that does nothing), the
  time from POST /prompt to its `execution_success`, distributed minus embedded (`fluxloom
  serve` without --queue, running at the same time; the two are measured in alternating rounds
  of 10 prompts, so that both see the same load on a shared machine), target ≤ 5 ms.

    python bench/scaleout.py [--sleep 0.25] [--prompts 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "FLUXLOOM_EXTRA_NODES": "tests.server.server_nodes"}
QUEUE = ["--visibility-timeout", "30", "--affinity-wait", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fluxloom(args: list[str], log: Path) -> subprocess.Popen:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", *args], cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT
    )


def wait_for(check, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\ndir {folder}\nappendonly yes\nappendfsync everysec\nsave ""\n'
    )
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() is None, "redis")
    return proc, f"redis://127.0.0.1:{port}/0"


def start_server(tmp: Path, name: str, models: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = ["serve", "--port", str(port), "--data-dir", str(tmp / name), "--models", str(models), *extra]
    proc = fluxloom(args, tmp / f"{name}.log")
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() is None, name)
    return proc, f"http://127.0.0.1:{port}"


def worker_count(base: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{base}/system_stats") as r:
        return len(json.loads(r.read())["fluxloom"]["workers"])


def sleeper(i: int, seconds: float) -> dict:
    return {
        "1": {"class_type": "SlowCount", "inputs": {"steps": 1, "delay": seconds, "start": i}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
    }


def trivial(i: int) -> dict:
    return {
        "1": {"class_type": "IntegerMath", "inputs": {"a": i, "b": 1, "operation": "add"}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
    }


async def burst(base: str, prompts: list[dict]) -> float:
    """Seconds from the first POST to the last `execution_success`."""
    cid = uuid.uuid4().hex
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{base}/ws?clientId={cid}") as ws:
        await ws.receive()
        t0 = time.perf_counter()
        waiting = set()
        for p in prompts:
            async with s.post(f"{base}/prompt", json={"prompt": p, "client_id": cid}) as r:
                waiting.add((await r.json())["prompt_id"])
        while waiting:
            msg = json.loads((await ws.receive()).data)
            if msg["type"] in ("execution_success", "execution_error"):
                assert msg["type"] == "execution_success", msg
                waiting.discard(msg["data"]["prompt_id"])
        return time.perf_counter() - t0


async def closed_loop(base: str, n: int, offset: int) -> list[float]:
    """Latency of each prompt, one at a time, POST to `execution_success`."""
    cid = uuid.uuid4().hex
    out = []
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{base}/ws?clientId={cid}") as ws:
        await ws.receive()
        for i in range(n):
            t = time.perf_counter()
            async with s.post(f"{base}/prompt", json={"prompt": trivial(offset + i), "client_id": cid}) as r:
                pid = (await r.json())["prompt_id"]
            while True:
                msg = json.loads((await ws.receive()).data)
                if msg["type"] == "execution_success" and msg["data"]["prompt_id"] == pid:
                    break
            out.append(time.perf_counter() - t)
    return out


def dispatch(tmp: Path, models: Path, base: str, n: int, procs: list) -> tuple[list[float], list[float]]:
    """Latencies of one-at-a-time prompts, distributed and embedded, in alternating rounds."""
    emb, emb_base = start_server(tmp, "embedded", models)
    procs.append(emb)
    asyncio.run(closed_loop(emb_base, 20, 0))  # warm-up
    distributed: list[float] = []
    embedded: list[float] = []
    for r in range(max(1, n // 10)):
        distributed += asyncio.run(closed_loop(base, 10, 10**6 + 10 * r))
        embedded += asyncio.run(closed_loop(emb_base, 10, 10**7 + 10 * r))
    emb.send_signal(signal.SIGTERM)
    return distributed, embedded


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sleep", type=float, default=0.25, help="seconds each throughput prompt sleeps")
    ap.add_argument("--prompts", type=int, default=100, help="prompts of the dispatch measure")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (make redis)")
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = tmp / "models"
        subprocess.run(
            [sys.executable, "-m", "server.cli", "demo-model", "--models", str(models)], cwd=REPO, check=True
        )
        try:
            redis_proc, url = start_redis(tmp)
            procs.append(redis_proc)
            fe, base = start_server(tmp, "frontend", models, "--queue", url, *QUEUE)
            procs.append(fe)
            throughput: dict[int, float] = {}
            workers: list[subprocess.Popen] = []
            for n in (1, 2, 4):
                while len(workers) < n:
                    k = len(workers) + 1
                    workers.append(
                        fluxloom(
                            [
                                "worker",
                                "--name",
                                f"w{k}",
                                "--queue",
                                url,
                                "--data-dir",
                                str(tmp / f"w{k}"),
                                "--models",
                                str(models),
                                *QUEUE,
                            ],
                            tmp / f"w{k}.log",
                        )
                    )
                    procs.append(workers[-1])
                wait_for(lambda n=n: worker_count(base) == n, f"{n} workers")
                asyncio.run(burst(base, [sleeper(-1 - i, 0.0) for i in range(2 * n)]))  # warm-up
                m = 12 * n
                seconds = asyncio.run(burst(base, [sleeper(1000 * n + i, args.sleep) for i in range(m)]))
                throughput[n] = m / seconds
                if n == 1:  # dispatch: one worker, as the embedded server has one worker thread
                    distributed, embedded = dispatch(tmp, models, base, args.prompts, procs)
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    one = throughput[1]
    print(f"scale-out bench: prompts that sleep {args.sleep:g} s, a burst of 12·N prompts with N workers")
    for n, t in throughput.items():
        label = f"{n} worker{'s' if n > 1 else ' '}"
        print(f"  {label}: {t:6.2f} prompts/s   ratio to {n} x one worker: {t / (n * one):.3f}")
    overhead = (median(distributed) - median(embedded)) * 1e3
    count = len(embedded)
    print(f"dispatch, one prompt at a time, one worker ({count} prompts each, POST to execution_success):")
    for name, xs in (("embedded (SQLite + thread)", embedded), ("distributed (Redis + worker)", distributed)):
        print(f"  {name:<30} median {median(xs) * 1e3:7.2f} ms   mean {mean(xs) * 1e3:7.2f} ms")
    ratio = median(distributed) / median(embedded)
    print(f"  overhead per prompt (medians): {overhead:.2f} ms (target <= 5 ms); ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
