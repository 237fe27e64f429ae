"""Live previews in the distributed mode: a `fluxloom worker` samples with the demo model and its
preview frames reach the websocket client of the front end the prompt came from, with the node
id, in order among the prompt's events; the images wait in Redis beside the event stream (never
in it) and expire; a front end started with `--preview-method none` passes none on."""

from __future__ import annotations

import uuid

import pytest

from tests.distributed.conftest import PREFIX, Cluster
from tests.server.preview_client import PreviewClient, frames, frames_inside_node
from tests.server.wsclient import done

pytestmark = pytest.mark.slow


def flux_prompt(steps: int, size: int = 64, seed: int = 1) -> dict:
    demo = {"source": "fluxloom-demo", "dtype": "fp32"}
    latent = {"width": size, "height": size, "batch_size": 1}
    return {
        "clip": {"class_type": "LoadCLIP", "inputs": demo},
        "t5": {"class_type": "LoadT5-8bit", "inputs": {**demo, "quantization": "none"}},
        "flux": {"class_type": "LoadFluxTransformer", "inputs": {**demo, "quantization": "none"}},
        "pos": {
            "class_type": "EncodePrompt",
            "inputs": {
                "clip": ["clip", 0],
                "t5": ["t5", 0],
                "prompt": "a fox",
                "prompt_2": "",
                "max_sequence_length": 16,
            },
        },
        "empty": {"class_type": "EmptyLatent16ch", "inputs": latent},
        "sample": {
            "class_type": "FluxSampler",
            "inputs": {
                "model": ["flux", 0],
                "positive": ["pos", 0],
                "latent": ["empty", 0],
                "seed": seed,
                "steps": steps,
                "guidance": 3.5,
                "true_cfg_scale": 1.0,
                "denoise": 1.0,
            },
        },
        "show": {"class_type": "ShowValue", "inputs": {"value": ["sample", 0]}},
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory, demo_models):
    c = Cluster(tmp_path_factory.mktemp("previews"), demo_models)
    try:
        c.worker("w1")
        c.frontend("fe")
        c.frontend("quiet", "--preview-method", "none")
        c.wait_workers("w1")
        yield c
    finally:
        c.close()


def _client(fe) -> tuple[str, PreviewClient]:
    cid = uuid.uuid4().hex
    ws = PreviewClient(f"ws://127.0.0.1:{fe.port}/ws?clientId={cid}")
    ws.hello()
    ws.collect(lambda m: m["type"] == "feature_flags", 10)
    return cid, ws


def test_a_workers_previews_reach_the_client_of_the_front_end(shared: Cluster):
    fe = shared.frontends[0]
    cid, ws = _client(fe)
    pid = fe.api.queue(flux_prompt(steps=20, seed=3), cid)
    messages = ws.collect(done(pid), timeout=240)
    ws.close()
    assert fe.api.wait_job(pid)["status"] == "success"
    got = frames(messages)
    assert 1 <= len(got) <= 20 and all(f.type == 4 for f in got), len(got)
    assert {(f.metadata["node_id"], f.metadata["prompt_id"]) for f in got} == {("sample", pid)}
    assert {f.size() for f in got} == {(64, 64)}
    assert frames_inside_node(messages, "sample")

    # In Redis: the events stream holds no image, the newest image waits under its node's key
    # and expires within a minute.
    r = shared.redis.client()
    entries = r.xrange(f"{PREFIX}events:{(fe.data / 'frontend-id').read_text().strip()}")
    previews = [f for _, f in entries if f[b"e"] == b"fluxloom.preview"]
    assert len(previews) >= len(got) and max(len(f[b"d"]) for f in previews) < 1000
    key = f"{PREFIX}preview:{pid}:sample"
    assert r.get(key)[:2] == b"\xff\xd8" and 0 < r.pttl(key) <= 60_000


def test_a_front_end_with_previews_off_passes_none_on(shared: Cluster):
    quiet = shared.frontends[1]
    cid, ws = _client(quiet)
    pid = quiet.api.queue(flux_prompt(steps=6, seed=4), cid)
    messages = ws.collect(done(pid), timeout=240)
    ws.close()
    assert frames(messages) == []
    assert [m["data"]["value"] for m in messages if isinstance(m, dict) and m["type"] == "progress"][-1] == 6
