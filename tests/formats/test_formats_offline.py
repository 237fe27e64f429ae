"""No hub, ever: with HF_HUB_OFFLINE unset and any network attempt made to fail loudly, every
single-file kind is discovered, loaded and used to encode a prompt without one connection try;
and a library's attempt to find a model on a hub becomes fluxloom's own clear error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from nodes.flux import offline
from nodes.flux import quantization as q
from nodes.flux.demo import build_tiny_flux
from nodes.flux.formats.discovery import find_model_files
from nodes.flux.formats.text_encoders import load_text_encoder_file
from tests.formats import encoder_files as ef


class NetworkAttempt(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Unset the offline switches a user would not have set, then make every name lookup and
    connection fail loudly, recording what was tried."""
    import huggingface_hub.constants

    for name in offline.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tried: list[str] = []

    def refuse(what):
        def attempt(*args, **kwargs):
            tried.append(f"{what}{args[1:] if what == 'connect' else args}")
            raise NetworkAttempt(f"fluxloom tried the network: {what} {args}")

        return attempt

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    return tried


@pytest.fixture(scope="module")
def text_encoders(tmp_path_factory) -> Path:
    """A ComfyUI models folder with text encoders in every single-file form."""
    pipeline = build_tiny_flux(tmp_path_factory.mktemp("offline") / "tiny", seed=7)
    models = tmp_path_factory.mktemp("offline-models") / "models"
    t5 = ef.t5_state(pipeline)
    ef.write(ef.clip_l_state(pipeline), models / "text_encoders" / "clip_l.safetensors")
    ef.write(ef.cast(t5, torch.float16), models / "text_encoders" / "t5xxl_fp16.safetensors")
    ef.write(ef.to_fp8(t5), models / "text_encoders" / "t5xxl_fp8_e4m3fn.safetensors")
    ef.write(ef.to_scaled_fp8(t5), models / "clip" / "t5xxl_fp8_e4m3fn_scaled.safetensors")
    return models


def test_the_guard_catches_a_connection_attempt(no_network):
    with pytest.raises(NetworkAttempt):
        socket.create_connection(("127.0.0.1", 9))
    assert no_network


def test_single_files_never_reach_a_hub(no_network, text_encoders):
    found = find_model_files(text_encoders)
    assert sorted(found["CLIP"]) == ["clip_l.safetensors"]
    assert sorted(found["T5"]) == [
        "t5xxl_fp16.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors",
        "t5xxl_fp8_e4m3fn_scaled.safetensors",
    ]
    clip, clip_tokenizer = load_text_encoder_file(found["CLIP"]["clip_l.safetensors"], "CLIP")
    ids = clip_tokenizer("a cat holding a sign", padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        assert clip(ids.input_ids).pooler_output.shape == (1, 64)
    for name, path in found["T5"].items():
        for choice in (q.NONE, q.INT8_BNB):
            t5, tokenizer = load_text_encoder_file(path, "T5", choice)
            ids = tokenizer("a cat holding a sign", padding="max_length", max_length=16, return_tensors="pt")
            with torch.no_grad():
                out = t5(ids.input_ids).last_hidden_state
            assert out.shape == (1, 16, 64) and torch.isfinite(out).all(), (name, choice)
    assert no_network == []


def test_a_library_asking_a_hub_gets_a_clear_error(no_network):
    """A model that is not on disk is fluxloom's HubAccessError, not a download (nor a try)."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    with pytest.raises(
        offline.HubAccessError, match="fluxloom never downloads models.*MODELS/text_encoders/"
    ):
        with offline.no_hub("CLIP-L"):
            CLIPTextModel.from_pretrained("openai/clip-vit-large-patch14")
    with pytest.raises(offline.HubAccessError, match="put the file under MODELS/diffusion_models/"):
        with offline.no_hub("FLUX.1-dev's transformer", "MODELS/diffusion_models/"):
            FluxTransformer2DModel.from_pretrained("black-forest-labs/FLUX.1-dev", subfolder="transformer")
    with pytest.raises(PermissionError):  # other errors pass through unchanged
        with offline.no_hub("CLIP-L"):
            raise PermissionError("/models/clip_l.safetensors: permission denied")
    assert no_network == []


def test_enforce_switches_the_libraries_offline(no_network):
    import os

    import huggingface_hub.constants

    offline.enforce()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
