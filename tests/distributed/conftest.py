"""A real `redis-server` on a free loopback port in a temporary directory (its own config:
append-only file on), real `fluxloom serve --queue` front ends and `fluxloom worker` processes,
with short visibility timeouts and heartbeats so that failures are detected in seconds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.server.conftest import Api
from tests.server.serve_process import free_port
from tests.server.wsclient import WSClient

REPO = Path(__file__).resolve().parents[2]
EXTRA_NODES = "tests.server.server_nodes,tests.distributed.dist_nodes"
PREFIX = "{fluxloom}:"
# Visibility timeout 4 s, heartbeat every 0.5 s: a killed worker's prompt is taken over ~4 s later,
# and a worker slowed down by a busy 2-core machine keeps its claim and its advert.
FAST = ["--visibility-timeout", "4", "--heartbeat", "0.5", "--max-deliveries", "2", "--affinity-wait", "1"]
START_TIMEOUT = 240  # a worker imports torch and the FLUX stack: slow on a busy 2-core machine

pytestmark = pytest.mark.slow


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


class RedisServer:
    """redis-server with appendonly yes / appendfsync everysec in its own directory."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (make test installs Debian's redis-server)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = folder / "redis.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {folder}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f"logfile {folder / 'redis.log'}",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", str(self.conf)], stdout=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        wait_until(up, 30, "redis-server to answer")

    def kill(self) -> None:
        """kill -9: no shutdown, no final save; what survives is what the AOF holds."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Process:
    """A fluxloom subprocess with its log."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        env = {**os.environ, "FLUXLOOM_EXTRA_NODES": EXTRA_NODES}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", *args],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


class Cluster:
    """One Redis, front ends and workers, all stopped at the end."""

    def __init__(self, tmp: Path, models: Path, extra: list[str] | None = None) -> None:
        self.tmp, self.models = tmp, models
        self.extra = FAST + (extra or [])
        self.redis = RedisServer(tmp / "redis")
        self.frontends: list[Frontend] = []
        self.workers: dict[str, Process] = {}

    def frontend(self, name: str = "fe", *args: str) -> Frontend:
        fe = Frontend(self, name, list(args))
        self.frontends.append(fe)
        return fe

    def worker(self, name: str, *args: str, models: Path | None = None) -> Process:
        cmd = ["worker", "--name", name, "--queue", self.redis.url, "--data-dir", str(self.tmp / name)]
        cmd += ["--models", str(models or self.models), *self.extra, *args]
        (self.tmp / "logs").mkdir(exist_ok=True)
        proc = self.workers[name] = Process(cmd, self.tmp / "logs" / f"{name}.log")
        return proc

    def wait_workers(self, *names: str, timeout: float = START_TIMEOUT) -> None:
        """Until each worker advertises itself on the queue."""
        r = self.redis.client()

        def ready() -> bool:
            for n in names:
                assert self.workers[n].alive(), f"worker {n} exited:\n{self.workers[n].tail()}"
            return all(r.exists(f"{PREFIX}worker:{n}") for n in names)

        wait_until(ready, timeout, f"workers {names}", interval=0.2)

    def advert(self, name: str) -> dict:
        import json

        raw = self.redis.client().get(f"{PREFIX}worker:{name}")
        return json.loads(raw) if raw else {}

    def close(self) -> None:
        for w in self.workers.values():
            w.stop(signal.SIGKILL, 10)
        for fe in self.frontends:
            fe.process.stop(signal.SIGKILL, 10)
        self.redis.stop()


class Frontend:
    def __init__(self, cluster: Cluster, name: str, args: list[str]) -> None:
        self.cluster, self.name, self.args = cluster, name, args
        self.data = cluster.tmp / name
        self.start()

    def start(self) -> None:
        self.port = free_port()
        cmd = ["serve", "--port", str(self.port), "--data-dir", str(self.data)]
        cmd += ["--queue", self.cluster.redis.url]
        cmd += [*self.cluster.extra, *self.args]
        (self.cluster.tmp / "logs").mkdir(exist_ok=True)
        self.process = Process(cmd, self.cluster.tmp / "logs" / f"{self.name}.log")
        self.api = Api(f"http://127.0.0.1:{self.port}")

        def up() -> bool:
            assert self.process.alive(), f"front end exited:\n{self.process.tail()}"
            try:
                return self.api.get("/prompt").status == 200
            except OSError:
                return False

        wait_until(up, START_TIMEOUT, "the front end to answer", interval=0.2)

    def ws(self, client_id: str) -> WSClient:
        return WSClient(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}")


def build_demo_models(folder: Path, names: tuple[str, ...] = ()) -> Path:
    """The demo model (tiny random FLUX), written once by `fluxloom demo-model`; with `names`,
    copied under those names instead (the demo itself removed)."""
    subprocess.run(
        [sys.executable, "-m", "server.cli", "demo-model", "--models", str(folder)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    if names:
        demo = folder / "diffusers" / "fluxloom-demo"
        for name in names:
            shutil.copytree(demo, folder / "diffusers" / name)
        shutil.rmtree(demo)
    return folder


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> Path:
    return build_demo_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def cluster(tmp_path, demo_models):
    c = Cluster(tmp_path, demo_models)
    yield c
    c.close()


def slow(steps: int, delay: float, start: int = 0, prefix: str = "d") -> dict:
    """SlowCount (sleeps `delay` per step, reports progress) → SaveTestImage."""
    return {
        "1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": delay, "start": start}},
        "2": {"class_type": "SaveTestImage", "inputs": {"value": ["1", 0], "filename_prefix": prefix}},
    }
