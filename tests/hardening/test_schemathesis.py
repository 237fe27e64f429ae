"""Fault 8 of issue 13, the whole of it: schemathesis fuzzes a live `fluxloom serve` (with the
demo model) against its own /openapi.json: every operation, every check (no 5xx, every status
and body as documented, schema-valid requests accepted, schema-violating ones refused, 405 for
undeclared methods, ...), all phases, a bounded number of examples, deterministic. The few
documented refusals no schema can express are listed in schemathesis.toml beside this file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.hardening.serve import Serve
from tests.server.serve_process import shared_models

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 25  # per operation and phase: about a minute on two cores


def test_schemathesis_finds_nothing(tmp_path, tmp_path_factory):
    srv = Serve(tmp_path, shared_models(tmp_path_factory))
    try:
        cmd = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{srv.api.base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ]
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=480)
        report = run.stdout + run.stderr
        assert run.returncode == 0, report[-12000:]
        doc = srv.api.get("/openapi.json").json()
        # Every operation but the document itself (schemathesis leaves out the URL it loads).
        operations = sum(len(ops) for ops in doc["paths"].values()) - 1
        assert f"{operations} selected / {operations} total" in report
        # The run left the server healthy: it still runs a real prompt.
        prompt = {
            "1": {"class_type": "IntegerMath", "inputs": {"a": 2, "b": 3, "operation": "multiply"}},
            "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
        }
        assert srv.api.wait_job(srv.api.queue(prompt))["outputs"] == {"2": {"text": ["6"]}}
        assert "Traceback" not in srv.log()
    finally:
        srv.stop()
