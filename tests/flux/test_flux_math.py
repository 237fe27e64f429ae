"""The pure FLUX maths against diffusers' own scheduler and pipeline helpers, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from nodes.flux import math as fm
from nodes.flux.demo import FLUX_DEV_SCHEDULER

DEV = fm.ShiftConfig(**FLUX_DEV_SCHEDULER)
SCHNELL = fm.ShiftConfig(shift=1.0, use_dynamic_shifting=False)


def diffusers_schedule(config: dict, steps: int, mu: float | None):
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    scheduler.set_timesteps(sigmas=sigmas, mu=mu)
    return scheduler


@pytest.mark.parametrize("seq_len", [16, 64, 256, 1024, 4096, 6000])
def test_mu_matches_calculate_shift(seq_len: int) -> None:
    assert fm.calculate_mu(seq_len, DEV) == calculate_shift(seq_len, 256, 4096, 0.5, 1.15)


@pytest.mark.parametrize("steps", [1, 2, 4, 20, 28, 50])
@pytest.mark.parametrize("seq_len", [16, 1024, 4096])
def test_dev_sigmas_and_timesteps_equal_scheduler(steps: int, seq_len: int) -> None:
    mu = fm.calculate_mu(seq_len, DEV)
    ref = diffusers_schedule(FLUX_DEV_SCHEDULER, steps, mu)
    sigmas = fm.flux_sigmas(steps, mu, DEV)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    assert torch.equal(sigmas, ref.sigmas)
    assert torch.equal(fm.sigmas_to_timesteps(sigmas, DEV), ref.timesteps)
    assert sigmas[-1].item() == 0.0


@pytest.mark.parametrize("steps", [1, 4, 7])
def test_schnell_static_shift_equals_scheduler(steps: int) -> None:
    config = dict(FLUX_DEV_SCHEDULER, use_dynamic_shifting=False, shift=1.0)
    ref = diffusers_schedule(config, steps, None)
    sigmas = fm.flux_sigmas(steps, 0.0, SCHNELL)
    assert torch.equal(sigmas, ref.sigmas)
    shifted = fm.ShiftConfig(shift=3.0, use_dynamic_shifting=False)
    ref3 = diffusers_schedule(dict(config, shift=3.0), steps, None)
    assert torch.equal(fm.flux_sigmas(steps, 0.0, shifted), ref3.sigmas)


def test_shift_config_reads_scheduler_file(tmp_path) -> None:
    FlowMatchEulerDiscreteScheduler(**dict(FLUX_DEV_SCHEDULER, max_shift=1.5)).save_pretrained(
        tmp_path / "scheduler"
    )
    cfg = fm.ShiftConfig.for_pipeline(tmp_path)
    assert cfg.max_shift == 1.5 and cfg.base_image_seq_len == 256
    assert fm.ShiftConfig.for_pipeline(tmp_path / "missing") == fm.ShiftConfig()


@pytest.mark.parametrize("text", ["", "[1, 2]", '{"shift": "3.0"}', "{not json"])
def test_a_damaged_scheduler_config_is_named(tmp_path, text) -> None:
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(text)
    with pytest.raises(ValueError, match="cannot read the scheduler config .*scheduler_config.json"):
        fm.ShiftConfig.for_pipeline(tmp_path)


@pytest.mark.parametrize("h,w", [(2, 2), (4, 6), (8, 4)])
def test_pack_unpack_and_ids_match_pipeline(h: int, w: int) -> None:
    x = torch.randn(2, 16, h, w, generator=torch.Generator().manual_seed(1))
    packed = fm.pack_latents(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 16, h, w))
    assert torch.equal(fm.unpack_latents(packed, h, w), x)
    assert torch.equal(fm.unpack_latents(packed, h, w), FluxPipeline._unpack_latents(packed, h * 8, w * 8, 8))
    for dtype in (torch.float32, torch.bfloat16):
        ref = FluxPipeline._prepare_latent_image_ids(2, h // 2, w // 2, "cpu", dtype)
        assert torch.equal(fm.latent_image_ids(h, w, "cpu", dtype), ref)


def test_latent_grid_is_even_and_floors() -> None:
    assert fm.latent_grid(1024, 768) == (128, 96)
    assert fm.latent_grid(72, 40) == (8, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_euler_step_equals_scheduler_step(dtype: torch.dtype) -> None:
    steps, mu = 6, fm.calculate_mu(64, DEV)
    ref = diffusers_schedule(FLUX_DEV_SCHEDULER, steps, mu)
    sigmas = fm.flux_sigmas(steps, mu, DEV)
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 64, 64, generator=g).to(dtype)
    ours = latents.clone()
    for i, t in enumerate(ref.timesteps):
        pred = torch.randn(1, 64, 64, generator=g).to(dtype)
        latents = ref.step(pred, t, latents, return_dict=False)[0]
        ours = fm.euler_step(ours, pred, sigmas[i], sigmas[i + 1])
        assert ours.dtype == dtype
        assert torch.equal(ours, latents)


def test_img2img_start_matches_get_timesteps() -> None:
    for steps in (1, 4, 10, 28):
        for denoise in (0.0, 0.05, 0.3, 0.5, 0.6, 0.75, 0.99, 1.0):
            scheduler = diffusers_schedule(FLUX_DEV_SCHEDULER, steps, 0.6)
            holder = type("P", (), {"scheduler": scheduler})()
            _, remaining = FluxImg2ImgPipeline.get_timesteps(holder, steps, denoise, "cpu")
            start = fm.img2img_start(steps, denoise)
            assert steps - start == remaining
            assert scheduler.begin_index == start


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scale_noise_equals_scheduler(dtype: torch.dtype) -> None:
    steps, mu = 8, 0.7
    scheduler = diffusers_schedule(FLUX_DEV_SCHEDULER, steps, mu)
    start = fm.img2img_start(steps, 0.6)
    scheduler.set_begin_index(start)
    g = torch.Generator().manual_seed(5)
    sample = torch.randn(2, 16, 4, 4, generator=g).to(dtype)
    noise = torch.randn(2, 16, 4, 4, generator=g).to(dtype)
    ref = scheduler.scale_noise(sample, scheduler.timesteps[start : start + 1].repeat(2), noise)
    ours = fm.scale_noise(sample, noise, fm.flux_sigmas(steps, mu, DEV), start)
    assert ours.dtype == dtype
    assert torch.equal(ours, ref)


def test_noise_is_drawn_on_cpu_in_dtype() -> None:
    a = fm.draw_noise((1, 16, 4, 4), fm.seeded_generator(42), torch.bfloat16, "cpu")
    b = torch.randn((1, 16, 4, 4), generator=torch.Generator("cpu").manual_seed(42), dtype=torch.bfloat16)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    big = fm.draw_noise((2,), fm.seeded_generator(2**64 - 1), torch.float32, "cpu")
    assert torch.isfinite(big).all()


def test_timestep_and_guidance_dtypes() -> None:
    t = torch.tensor(987.5)
    ts = fm.model_timestep(t, 2, torch.bfloat16)
    assert ts.dtype == torch.bfloat16 and torch.equal(ts, t.expand(2).to(torch.bfloat16) / 1000)
    g = fm.guidance_vector(3.5, 3, "cpu")
    assert g.dtype == torch.float32 and g.tolist() == [3.5, 3.5, 3.5]


def test_true_cfg_and_scaling_helpers() -> None:
    pos, neg = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5])
    assert fm.true_cfg(pos, neg, 4.0).tolist() == [2.5, 6.5]
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert fm.to_unit_range(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert torch.equal(fm.decode_scale(fm.encode_scale(x, 0.5, 0.25), 0.5, 0.25), x)
