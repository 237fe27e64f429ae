"""Model-affinity routing with real workers: two workers, two models (the demo model copied
under two names), alternating prompts: each model is loaded once, by one worker (read from the
workers' own model-manager events, which they advertise)."""

from __future__ import annotations

import pytest

from tests.distributed.conftest import PREFIX, Cluster, build_demo_models

pytestmark = pytest.mark.slow


def decode(model: str, size: int) -> dict:
    """Only the VAE of `model` is loaded: decode an empty latent of `size` (never cached twice)."""
    return {
        "1": {"class_type": "LoadVAE", "inputs": {"source": model, "dtype": "auto"}},
        "2": {"class_type": "EmptyLatent16ch", "inputs": {"width": size, "height": 16, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 0], "latent": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    return build_demo_models(tmp_path_factory.mktemp("two-models"), ("alpha", "beta"))


def test_alternating_prompts_never_load_a_model_twice(tmp_path, two_models):
    cluster = Cluster(tmp_path, two_models, ["--affinity-wait", "60"])
    try:
        cluster.worker("w1")
        cluster.worker("w2")
        fe = cluster.frontend()
        cluster.wait_workers("w1", "w2")
        models = ["alpha", "beta"] * 4
        ids = [fe.api.queue(decode(m, 16 * (i + 1))) for i, m in enumerate(models)]
        jobs = [fe.api.wait_job(pid, timeout=120) for pid in ids]
        assert [j["status"] for j in jobs] == ["success"] * 8, [j["error"] for j in jobs]

        r = cluster.redis.client()
        ran_on = {pid: r.hget(f"{PREFIX}prompt:{pid}", "worker").decode() for pid in ids}
        by_model = {
            m: {ran_on[pid] for pid, mm in zip(ids, models, strict=True) if mm == m} for m in set(models)
        }
        assert len(by_model["alpha"]) == 1 and len(by_model["beta"]) == 1
        assert by_model["alpha"] != by_model["beta"]  # one worker per model

        stats = {w["name"]: w for w in fe.api.get("/system_stats").json()["fluxloom"]["workers"]}
        loads: dict[str, int] = {}
        for w in stats.values():
            for name, n in w["model_loads"].items():
                loads[name] = loads.get(name, 0) + n
        assert loads == {"alpha/VAE (auto)": 1, "beta/VAE (auto)": 1}, stats
        (alpha_worker,) = by_model["alpha"]
        assert stats[alpha_worker]["loaded"] == ["alpha"]

        # A model no worker has fails validation, naming what the workers offer.
        bad = fe.api.post("/prompt", {"prompt": decode("gamma", 16)})
        assert bad.status == 400
        (err,) = bad.json()["node_errors"]["1"]["errors"]
        assert err["type"] == "value_not_in_list" and "alpha, beta" in err["details"]
    finally:
        cluster.close()
