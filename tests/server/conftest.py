"""A real fluxloom server on 127.0.0.1 (in a thread, real sockets) with its own node registry:
the model-free utility nodes plus tests/server/server_nodes.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import nodes.utility  # noqa: F401  (registers the utility nodes in the app's REGISTRY)
from nodes.base import REGISTRY, NodeEnv, NodeRegistry
from server.app import ServerConfig, create_app
from server.cache import OutputCache
from server.executor import Executor
from server.routes.common import Limits
from server.runtime import Runtime
from server.security import SecurityConfig
from tests.server import server_nodes
from tests.server.wsclient import WSClient


def make_registry() -> NodeRegistry:
    reg = NodeRegistry()
    for d in REGISTRY:
        if d.python_module == "nodes.utility":
            reg.register(d)
    for d in server_nodes.registry:
        reg.register(d)
    return reg


def make_runtime(data_dir: Path) -> Runtime:
    reg = make_registry()
    env = NodeEnv(
        models_dir=data_dir / "models",
        input_dir=data_dir / "input",
        output_dir=data_dir / "output",
        temp_dir=data_dir / "temp",
    )
    for d in (env.input_dir, env.output_dir, env.temp_dir):
        d.mkdir(parents=True, exist_ok=True)
    return Runtime(registry=reg, env=env, executor=Executor(reg, env, OutputCache(64 * 2**20)))


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """urllib against the server, returning status + body for errors as well."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base, self.headers = base, headers or {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {**self.headers, **(headers or {})}
        if body is not None and raw is None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return Response(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read(), dict(e.headers))

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def queue(self, prompt: dict, client_id: str | None = None, **extra: Any) -> str:
        r = self.post("/prompt", {"prompt": prompt, "client_id": client_id, **extra})
        assert r.status == 200, r.body
        return r.json()["prompt_id"]

    def wait_job(
        self, prompt_id: str, timeout: float = 30.0, until=("success", "error", "interrupted")
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/jobs/{prompt_id}").json()
            if job["status"] in until:
                return job
            time.sleep(0.02)
        raise TimeoutError(f"job {prompt_id} still {job['status']}")


class ServerThread:
    """create_app() served by an aiohttp AppRunner on 127.0.0.1:<free port> in a thread."""

    def __init__(
        self,
        data_dir: Path,
        security: SecurityConfig | None = None,
        web_dir: Path | None = None,
        limits: Limits | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.runtime = runtime or make_runtime(data_dir)  # default: the model-free test nodes
        cfg = ServerConfig(
            data_dir=data_dir, security=security or SecurityConfig(), limits=limits or Limits()
        )
        if web_dir is not None:
            cfg.web_dir = web_dir
        self.app = create_app(self.runtime, cfg)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, shutdown_timeout=2)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(30), "server did not start"
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(
        self, client_id: str | None = None, headers: dict[str, str] | None = None, path: str = "/ws"
    ) -> WSClient:
        query = f"?clientId={client_id}" if client_id else ""
        return WSClient(f"ws://127.0.0.1:{self.port}{path}{query}", headers=headers)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server) -> Api:
    return Api(server.url)


def client_id() -> str:
    return uuid.uuid4().hex


def slow_prompt(steps: int = 5, delay: float = 0.01, start: int = 0, prefix: str = "test") -> dict:
    """SlowCount → SaveTestImage: two nodes, progress events, one image."""
    return {
        "1": {
            "class_type": "SlowCount",
            "inputs": {"steps": steps, "delay": delay, "start": start},
            "_meta": {"title": "Counter"},
        },
        "2": {
            "class_type": "SaveTestImage",
            "inputs": {"value": ["1", 0], "filename_prefix": prefix},
            "_meta": {"title": "Save"},
        },
    }


def math_prompt(a: int, b: int = 1) -> dict:
    return {
        "1": {"class_type": "IntegerMath", "inputs": {"a": a, "b": b, "operation": "add"}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
    }
