"""The model manager's accounting: lazy loads, the LRU under a small device budget, the host-RAM
budget, models in use, releasing from another thread, and its log."""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from nodes.flux.handles import ModelHandle
from server.models import module_bytes
from tests.models.conftest import create_manager

NONE = "none"


def handle(path, kind: str, quantization: str = NONE, dtype: str = "fp32") -> ModelHandle:
    return ModelHandle(
        kind=kind, source="fluxloom-demo", path=str(path), quantization=quantization, dtype=dtype
    )


@pytest.fixture
def sizes(demo_path):
    """Bytes each part takes once loaded unquantized in fp32, measured by a roomy manager."""
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=2**30, device="cpu")
    out = {}
    for kind in ("CLIP", "T5", "FLUX_MODEL", "VAE"):
        with m.use(handle(demo_path, kind)) as lm:
            out[kind] = module_bytes(lm.module)
    return out


def test_handles_are_cheap_and_nothing_loads_until_used(demo_path):
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=2**30, device="cpu")
    h = handle(demo_path, "T5")
    assert h == handle(demo_path, "T5") and hash(h) == hash(handle(demo_path, "T5"))
    assert h.cache_size() < 1024
    assert not m.is_loaded(h) and m.events == []
    with m.use(h) as lm:
        assert isinstance(lm.module, torch.nn.Module) and lm.tokenizer is not None
        assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    # A second use, even through an equal new handle, is answered from the manager's cache.
    with m.use(handle(demo_path, "T5")):
        pass
    assert [e.action for e in m.events] == ["load"]


def test_small_budget_forces_lru_offloading(demo_path, sizes):
    # The parts from the smallest to the largest (the demo's text encoders, with their real
    # 49,408 / 32,128-row vocabularies, outweigh its tiny transformer).
    a, b, c, d = sorted(sizes, key=sizes.get)
    budget = sizes[c] + sizes[d] + 1000  # room for the two largest only
    assert sizes[a] + sizes[b] + sizes[c] <= budget < sizes[b] + sizes[c] + sizes[d]
    m = create_manager(demo_path.parent.parent, vram_budget=budget, ram_budget=2**30, device="cpu")
    for kind in (a, b, c, d):
        with m.use(handle(demo_path, kind)):
            pass
    moves = [(e.action, e.kind) for e in m.events]
    assert moves == [
        ("load", a),
        ("load", b),
        ("load", c),
        ("offload", a),  # least recently used goes first
        ("offload", b),
        ("load", d),
    ]
    assert all("making room for" in e.reason for e in m.events if e.action == "offload")
    assert m.location(handle(demo_path, c)) == "device"  # not evicted: the budget had room
    assert m.peak_device_bytes <= budget
    stats = m.stats()
    assert {d["kind"]: d["location"] for d in stats["loaded"]} == {
        a: "cpu",
        b: "cpu",
        c: "device",
        d: "device",
    }
    # Coming back to the device evicts in LRU order again: c, used before d.
    with m.use(handle(demo_path, a)):
        pass
    assert [(e.action, e.kind) for e in m.events[-2:]] == [("offload", c), ("to_device", a)]
    assert len([e for e in m.events if e.action == "load"]) == 4  # nothing was read twice


def test_full_host_budget_releases_instead_of_offloading(demo_path, sizes):
    x, y, z = sorted(sizes, key=sizes.get)[-3:]
    assert sizes[x] + sizes[y] <= sizes[z] + 1000  # x and y fit together; z needs both gone
    m = create_manager(
        demo_path.parent.parent,
        vram_budget=sizes[z] + 1000,
        ram_budget=sizes[x] + 1000,  # holds x, not x and y
        device="cpu",
    )
    for kind in (x, y, z):
        with m.use(handle(demo_path, kind)):
            pass
    assert [(e.action, e.kind) for e in m.events][2:4] == [("offload", x), ("release", y)]
    assert "host RAM budget full" in m.events[3].reason
    assert not m.is_loaded(handle(demo_path, y))
    assert m.host_bytes == sizes[x]


def test_models_in_use_are_never_evicted(demo_path, sizes, caplog):
    m = create_manager(
        demo_path.parent.parent, vram_budget=sizes["CLIP"] + 1000, ram_budget=2**30, device="cpu"
    )
    with caplog.at_level(logging.WARNING, "fluxloom.models"), m.use(handle(demo_path, "CLIP")):
        with m.use(handle(demo_path, "VAE")):
            assert {h.kind for h in m.on_device()} == {"CLIP", "VAE"}
    assert "going over the budget" in caplog.text


def test_explicit_offload_and_release(demo_path, sizes):
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=2**30, device="cpu")
    t5, clip = handle(demo_path, "T5"), handle(demo_path, "CLIP")
    for h in (t5, clip):
        with m.use(h):
            pass
    m.offload(t5)
    assert m.location(t5) == "cpu" and m.host_bytes == sizes["T5"]
    m.release(clip)
    assert not m.is_loaded(clip) and m.device_bytes == 0
    m.release_all()
    assert m.stats()["loaded"] == [] and m.device_bytes == 0 and m.host_bytes == 0
    assert [e.action for e in m.events][-3:] == ["offload", "release", "release"]


def test_offload_over_the_ram_budget_releases(demo_path, sizes):
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=sizes["T5"] - 1, device="cpu")
    t5 = handle(demo_path, "T5")
    with m.use(t5):
        pass
    m.offload(t5)
    assert not m.is_loaded(t5)
    assert m.events[-1].action == "release" and "host RAM budget" in m.events[-1].reason


def test_release_all_from_another_thread_waits_for_the_model_in_use(demo_path):
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=2**30, device="cpu")
    h = handle(demo_path, "CLIP")
    other = threading.Thread(target=m.release_all)
    with m.use(h) as lm:
        other.start()
        other.join(timeout=30)
        assert not other.is_alive()
        # Still usable by the node that holds it...
        ids = lm.tokenizer("a cat", return_tensors="pt").input_ids
        assert lm.module(ids).pooler_output.shape == (1, 64)
        assert m.is_loaded(h)
    # ...and dropped as soon as that use ends.
    assert not m.is_loaded(h)
    assert m.events[-1].action == "release"


def test_stats_shape(demo_path):
    m = create_manager(demo_path.parent.parent, vram_budget=10**9, ram_budget=2 * 10**9, device="cpu")
    with m.use(handle(demo_path, "VAE")):
        pass
    s = m.stats()
    assert s["device"] == "cpu" and s["vram_budget"] == 10**9 and s["ram_budget"] == 2 * 10**9
    assert s["demo_only"] is True
    (entry,) = s["loaded"]
    assert entry["kind"] == "VAE" and entry["location"] == "device" and entry["quantization"] == "none"
    assert entry["bytes"] > 0 and entry["name"].startswith("fluxloom-demo/VAE")


def test_automatic_budgets_on_the_cpu(demo_path):
    m = create_manager(demo_path.parent.parent, device="cpu")
    assert 0 < m.ram_budget <= m.vram_budget


def test_size_estimate_matches_the_measured_size(demo_path, sizes):
    from nodes.flux.provider import estimate_handle

    for kind, measured in sizes.items():
        estimate = estimate_handle(handle(demo_path, kind), torch.device("cpu"))
        assert abs(estimate - measured) <= 0.01 * measured, kind


def test_load_log_names_model_and_size(demo_path, caplog):
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=2**30, device="cpu")
    with caplog.at_level(logging.INFO, "fluxloom.models"), m.use(handle(demo_path, "VAE")):
        pass
    assert "loaded onto cpu fluxloom-demo/VAE (fp32)" in caplog.text and "MiB" in caplog.text


def test_offloading_a_model_larger_than_the_ram_budget_keeps_the_offloaded_ones(demo_path, sizes):
    """A model that can never fit the host-RAM budget is released at once, without first
    dropping the smaller models already offloaded there."""
    small, big = sorted(("CLIP", "T5", "VAE"), key=sizes.get)[0], "FLUX_MODEL"
    assert sizes[small] < sizes[big]
    m = create_manager(demo_path.parent.parent, vram_budget=2**30, ram_budget=sizes[big] - 1, device="cpu")
    little, large = handle(demo_path, small), handle(demo_path, big)
    for h in (little, large):
        with m.use(h):
            pass
    m.offload(little)
    assert m.location(little) == "cpu"
    m.offload(large)
    assert not m.is_loaded(large) and m.location(little) == "cpu" and m.host_bytes == sizes[small]
    assert [e.action for e in m.events][-2:] == ["offload", "release"]


def test_the_event_log_is_bounded(monkeypatch):
    """A long-running server loads and releases models for weeks: the log keeps the latest."""
    import server.models
    from nodes.base import LoadedModel, ModelProvider
    from server.models import ModelManager

    monkeypatch.setattr(server.models, "MAX_EVENTS", 10, raising=False)

    def load(h, device):
        return LoadedModel(torch.nn.Linear(4, 4), None, device, torch.float32)

    m = ModelManager(ModelProvider(load), device="cpu", vram_budget=2**20, ram_budget=2**20)
    for i in range(15):
        h = ModelHandle("VAE", "x", f"/nowhere/{i}", NONE, "fp32")
        with m.use(h):
            pass
        m.release(h)
    assert len(m.events) == 10
    assert [e.action for e in m.events] == ["load", "release"] * 5
    assert m.events[-1].name == ModelHandle("VAE", "x", "/nowhere/14", NONE, "fp32").name
