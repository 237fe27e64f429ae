"""`fluxloom serve` as a real subprocess (with the test nodes loaded through the custom-nodes
hook), for the tests that kill it, signal it, or start it with command-line options."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.server.conftest import Api

REPO = Path(__file__).resolve().parents[2]
_MODELS: list[Path] = []


def shared_models(tmp_path_factory) -> Path:
    """One models folder for every subprocess server of the session: the first start writes
    the demo model into it, the others reuse it."""
    if not _MODELS:
        _MODELS.append(tmp_path_factory.mktemp("models"))
    return _MODELS[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """Started and answering `GET /prompt` with `ready_status` when the constructor returns."""

    def __init__(self, data: Path, models: Path, log: Path, *args: str, ready_status: int = 200) -> None:
        self.port = free_port()
        self.log = log.open("ab")
        env = {**os.environ, "FLUXLOOM_EXTRA_NODES": "tests.server.server_nodes"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data),
                "--models",
                str(models),
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.api = Api(f"http://127.0.0.1:{self.port}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
            try:
                if self.api.get("/prompt").status == ready_status:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc
