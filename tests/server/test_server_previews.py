"""Live previews while sampling (server/previews.py): the latent → RGB projection and the preview
image, ComfyUI's binary frames, the throttle, and the whole path on a real server with tiny real
FLUX models: FluxSampler and KSampler hand their denoised estimate to ctx.progress, the frames
reach only the client that queued the prompt (type 4 with the node id to a client that asked for
it, type 1 otherwise), inside the node's run, and `--preview-method none` sends none; a client
that is behind misses previews rather than being dropped for them."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from nodes.flux import math as fm
from nodes.flux.demo import build_tiny_flux
from server import events
from server.app import ServerConfig, create_app
from server.cli import build_parser
from server.previews import (
    FLUX_RGB_BIAS,
    FLUX_RGB_FACTORS,
    PREVIEW_EVENT,
    Captured,
    PreviewRenderer,
    capture,
    check_method,
    encode_jpeg,
    image,
    latent_to_rgb,
)
from server.routes.common import STATE
from server.routes.frontend_info import server_features
from server.runtime import RuntimeConfig, create_runtime
from tests.comfy_nodes import graphs
from tests.flux.builders import model_dir, output_of, run
from tests.hardening.serve import ws_handshake
from tests.server.conftest import Api, ServerThread, client_id
from tests.server.preview_client import PreviewClient, frames, frames_inside_node, parse_frame
from tests.server.wsclient import done


def preview_image(preview, max_size: int = 512):
    """Both stages the server runs (capture on the sampling thread, image on the encoder's): a
    PIL image of a preview, or None."""
    captured = capture(preview)
    return None if captured is None else image(captured, max_size)


def render(preview) -> bytes | None:
    """A preview as the JPEG bytes a frame carries, or None when it has nothing to show."""
    picture = preview_image(preview)
    return None if picture is None else encode_jpeg(picture)


# --- the projection and the image ---------------------------------------------------------------


def _pixel(values: list[float]) -> tuple[int, ...]:
    return tuple(round(min(255.0, max(0.0, (v + 1) * 127.5))) for v in values)


def test_zero_latent_is_the_bias_and_one_channel_adds_its_factors():
    latent = torch.zeros(2, 16, 3, 5)
    rgb = latent_to_rgb(latent)
    assert rgb.shape == (3, 5, 3) and rgb.dtype == torch.uint8
    assert tuple(int(c) for c in rgb[1, 2]) == _pixel(list(FLUX_RGB_BIAS))
    latent[0, 4, 0, 0] = 2.0  # channel 4: mostly brightness in ComfyUI's table
    want = [b + 2.0 * f for b, f in zip(FLUX_RGB_BIAS, FLUX_RGB_FACTORS[4], strict=True)]
    rgb = latent_to_rgb(latent)
    assert tuple(int(c) for c in rgb[0, 0]) == _pixel(want)
    assert tuple(int(c) for c in rgb[0, 1]) == _pixel(list(FLUX_RGB_BIAS))  # only that cell moved
    # Only the first image of a batch is shown; bf16 latents (a bf16 transformer's) work too.
    latent[1] = 5.0
    assert (latent_to_rgb(latent.bfloat16()).int() - latent_to_rgb(latent).int()).abs().max() <= 2


def test_preview_sizes_grow_tiny_latents_and_bound_large_ones():
    def size(h: int, w: int) -> tuple[int, int]:
        return preview_image(torch.randn(1, 16, h, w)).size

    assert size(4, 4) == (32, 32)  # a 32x32 image: 8x, its own size
    assert size(128, 128) == (512, 512)  # 1024x1024: 4x
    assert size(60, 100) == (500, 300)  # a whole factor, width x height
    assert size(96, 160) == (480, 288)  # 1280x768: 3x
    assert size(700, 700) == (512, 512)  # over the bound: scaled down
    image = preview_image(torch.randn(1, 16, 16, 16), max_size=64)
    assert image.size == (64, 64)
    # Nearest: each latent cell is a block of one colour.
    blocks = preview_image(torch.randn(1, 16, 2, 2)).crop((0, 0, 8, 8))
    assert len(blocks.getcolors()) == 1


def test_images_and_comfyui_tuples_from_custom_nodes_and_lazy_latents():
    pil = Image.new("RGB", (1000, 250), (10, 200, 30))
    assert preview_image(pil).size == (512, 128)
    assert preview_image(("JPEG", pil, 256)).size == (256, 64)
    assert preview_image(lambda: torch.zeros(1, 16, 8, 8)).size == (64, 64)
    assert preview_image("not a preview") is None
    jpeg = render(torch.zeros(1, 16, 8, 8))
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
        r, g, b = im.convert("RGB").getpixel((10, 10))
        want = _pixel(list(FLUX_RGB_BIAS))
        assert max(abs(r - want[0]), abs(g - want[1]), abs(b - want[2])) <= 3  # JPEG's loss
    with pytest.raises(ValueError, match="16 channels"):
        preview_image(torch.zeros(1, 4, 8, 8))  # an SD latent: no projection for it


def test_preview_methods():
    assert check_method("auto") == "latent2rgb" and check_method("none") == "none"
    with pytest.raises(ValueError, match="unknown preview method 'taesd'"):
        check_method("taesd")
    assert not PreviewRenderer("none").enabled and PreviewRenderer("none").for_prompt("p", print) is None
    args = build_parser().parse_args(["serve", "--preview-method", "none"])
    assert args.preview_method == "none"
    assert build_parser().parse_args(["worker", "--queue", "redis://x"]).preview_method == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--preview-method", "taesd"])
    assert server_features(1)["supports_preview_metadata"] is True


# --- frames -------------------------------------------------------------------------------------


def test_frames_are_comfyuis_binary_events():
    meta = events.preview_metadata("7", "p-1")
    frame = events.preview_frame(b"\xff\xd8jpeg", meta)
    assert struct.unpack(">II", frame[:8]) == (4, len(frame) - 8 - len(b"\xff\xd8jpeg"))
    parsed = parse_frame(frame)
    assert parsed.image == b"\xff\xd8jpeg"
    assert parsed.metadata == {
        "node_id": "7",
        "prompt_id": "p-1",
        "display_node_id": "7",
        "parent_node_id": None,
        "real_node_id": "7",
        "image_type": "image/jpeg",
    }
    old = events.preview_frame(b"\xff\xd8jpeg")
    assert old[:8] == struct.pack(">II", 1, 1) and parse_frame(old).image == b"\xff\xd8jpeg"


# --- the throttle and the background encoder ----------------------------------------------------


def _stream(renderer: PreviewRenderer, wanted=lambda: True):
    sent: list[tuple[dict, bytes]] = []
    return renderer.for_prompt("p", lambda meta, jpeg: sent.append((meta, jpeg)), wanted), sent


def test_at_most_one_frame_per_step_and_per_interval():
    renderer = PreviewRenderer(min_interval_s=0)
    stream, sent = _stream(renderer)
    latent = torch.zeros(1, 16, 2, 2)
    for step in (1, 1, 2, 2, 3):
        stream("9", step, 3, latent)
        assert renderer.idle(10)
    assert [meta["node_id"] for meta, _ in sent] == ["9", "9", "9"] and stream.offered == 5

    slow = PreviewRenderer(min_interval_s=3600)  # one frame, then nothing for an hour
    stream, sent = _stream(slow)
    for step in range(1, 21):
        stream("9", step, 20, latent)
    assert slow.idle(10) and len(sent) == 1 and stream.offered == 20

    nobody = PreviewRenderer(min_interval_s=0)
    stream, sent = _stream(nobody, wanted=lambda: False)
    stream("9", 1, 1, lambda: pytest.fail("a preview nobody sees is never computed"))
    assert nobody.idle(10) and sent == []
    for r in (renderer, slow, nobody):
        r.close()


class Gate:
    """Stands where a CUDA event stands in a capture: the encoder thread waits on it."""

    def __init__(self) -> None:
        self.reached, self.opened = threading.Event(), threading.Event()

    def synchronize(self) -> None:
        self.reached.set()
        assert self.opened.wait(10)


def test_a_frame_never_follows_the_event_that_ended_its_node_and_only_the_newest_waits():
    renderer = PreviewRenderer(min_interval_s=0)
    stream, sent = _stream(renderer)
    gate = Gate()
    seen: list[str] = []
    listener = stream.wrap(lambda event, data: seen.append(event))
    stream.submit("9", Captured(latent_to_rgb(torch.zeros(1, 16, 2, 2)), ready=gate))
    assert gate.reached.wait(10)  # being encoded now
    stream("9", 2, 4, torch.zeros(1, 16, 2, 2))  # waits
    stream("9", 3, 4, torch.zeros(1, 16, 2, 2))  # replaces it
    listener("progress", {})  # progress does not end the node
    listener("executing", {"node": "10"})  # this does: both frames are now stale
    gate.opened.set()
    assert renderer.idle(10)
    assert sent == [] and renderer.dropped == 1 and seen == ["progress", "executing"]

    stream("10", 1, 1, torch.zeros(1, 16, 2, 2))  # the next node's previews flow again
    assert renderer.idle(10) and [m["node_id"] for m, _ in sent] == ["10"]
    renderer.close()


def test_a_preview_that_fails_to_draw_never_fails_the_run(caplog):
    renderer = PreviewRenderer(min_interval_s=0)
    stream, sent = _stream(renderer)
    stream("9", 1, 2, torch.zeros(1, 4, 2, 2))
    stream("9", 2, 2, torch.zeros(1, 4, 2, 2))
    assert renderer.idle(10) and sent == [] and stream.failed == 2
    assert [r.getMessage() for r in caplog.records if r.name == "fluxloom.previews"] == [
        "preview of node 9 not drawn: a latent preview needs 16 channels [B, 16, h, w], got (1, 4, 2, 2)"
    ]
    renderer.close()


# --- the samplers hand over their denoised estimate ---------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preview-models")
    build_tiny_flux(model_dir(root, "tiny-dev"), seed=0, guidance_embeds=True)
    return root


def _runtime(models: Path, work: Path):
    config = RuntimeConfig(
        models_dir=models,
        output_dir=work / "output",
        input_dir=work / "input",
        temp_dir=work / "temp",
        cache_budget_bytes=256 * 2**20,
        ensure_demo_model=False,
    )
    return create_runtime(config, graphs.registry_with_test_nodes())


@pytest.fixture(scope="module")
def rt(models, tmp_path_factory):
    return _runtime(models, tmp_path_factory.mktemp("preview-run"))


def flux_prompt(steps: int = 3, size: int = 32, seed: int = 1) -> dict:
    prompt = graphs.models()
    prompt["pos"] = graphs.encode_prompt("a red fox")
    size_inputs = {"width": size, "height": size, "batch_size": 1}
    prompt["empty"] = {"class_type": "EmptyLatent16ch", "inputs": size_inputs}
    prompt["sample"] = {
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
    }
    prompt["out"] = graphs.keep(["sample", 0])
    return prompt


def _previews_of(rt, prompt: dict) -> list[tuple[str, int, int, torch.Tensor]]:
    got = []

    def on_preview(node, value, total, preview):
        got.append((node, value, total, preview() if callable(preview) else preview))

    result = rt.executor.execute(prompt, "previews", None, None, on_preview)
    assert result.ok, result.error
    return got


def test_flux_sampler_previews_its_denoised_estimate(rt):
    prompt = flux_prompt(steps=3)
    got = _previews_of(rt, prompt)
    assert [(n, v, t) for n, v, t, _ in got] == [("sample", i, 3) for i in (1, 2, 3)]
    assert all(p.shape == (1, 16, 4, 4) for *_, p in got)
    # At the last step the schedule reaches sigma 0: the estimate is the sampler's result.
    out = output_of(rt, prompt, "sample")["samples"]
    torch.testing.assert_close(fm.decode_scale(got[-1][3]), out, atol=1e-5, rtol=1e-5)
    # Earlier estimates are not (they are previews of a run still under way).
    assert not torch.allclose(fm.decode_scale(got[0][3]), out, atol=1e-3)


def test_ksampler_previews_its_denoised_estimate(rt):
    prompt = graphs.txt2img(short=True, steps=3, sampler_name="euler")
    got = _previews_of(rt, prompt)
    assert [(n, v, t) for n, v, t, _ in got] == [("sample", i, 3) for i in (1, 2, 3)]
    out = output_of(rt, prompt, "sample")["samples"]
    assert all(p.shape == out.shape for *_, p in got)
    from nodes.comfy.model_sampling import latent_out

    torch.testing.assert_close(latent_out(got[-1][3].float()), out, atol=1e-5, rtol=1e-5)


def test_sampling_without_a_preview_sink_is_unchanged(rt):
    prompt = flux_prompt(steps=2, seed=5)
    run(rt, prompt)
    plain = output_of(rt, prompt, "sample")["samples"]
    rt.executor.cache.clear()
    _previews_of(rt, prompt)
    assert torch.equal(output_of(rt, prompt, "sample")["samples"], plain)


# --- on a real server ---------------------------------------------------------------------------


class PreviewServer(ServerThread):
    """ServerThread (real sockets, a thread) around a runtime with the FLUX nodes."""

    def __init__(self, data_dir: Path, runtime, preview_method: str = "auto") -> None:
        self.runtime = runtime
        self.app = create_app(runtime, ServerConfig(data_dir=data_dir, preview_method=preview_method))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def ws(self, client_id: str | None = None, **kw) -> PreviewClient:
        return PreviewClient(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}")


@pytest.fixture(scope="module")
def server(rt, tmp_path_factory):
    srv = PreviewServer(tmp_path_factory.mktemp("preview-server"), rt).start()
    yield srv
    srv.stop()


def _open(server, metadata: bool | None = True) -> tuple[str, PreviewClient]:
    cid = client_id()
    ws = server.ws(cid)
    if metadata is not None:
        ws.hello(metadata)
    ws.collect(lambda m: m["type"] == ("feature_flags" if metadata is not None else "status"), 10)
    return cid, ws


def test_previews_reach_only_the_client_that_queued_the_prompt(server):
    api = Api(server.url)
    cid, ws = _open(server)
    other_id, other = _open(server)
    pid = api.queue(flux_prompt(steps=20, size=64, seed=11), cid)
    messages = ws.collect(done(pid))
    got = frames(messages)
    assert 1 <= len(got) <= 20, len(got)
    assert all(f.type == 4 for f in got)
    assert {f.metadata["node_id"] for f in got} == {"sample"}
    assert {f.metadata["prompt_id"] for f in got} == {pid}
    assert {f.size() for f in got} == {(64, 64)}  # an 8x8 latent, 8x: the image's own size
    assert frames_inside_node(messages, "sample")
    # The other client saw the queue change and nothing of the prompt, previews included: its own
    # prompt's end comes after anything the hub could have sent it about the first one.
    api.queue(graphs.txt2img(short=True, steps=1), other_id)  # a prompt of its own ends its wait
    mine = other.collect(lambda m: m["type"] == "executing" and m["data"]["node"] is None)
    assert all(f.metadata["prompt_id"] != pid for f in frames(mine))
    ws.close()
    other.close()


def test_ksampler_previews_and_the_older_frame_for_clients_without_metadata(server):
    api = Api(server.url)
    cid, ws = _open(server, metadata=None)  # a client that never sent feature_flags
    pid = api.queue(graphs.txt2img(short=True, steps=20, seed=3), cid)
    messages = ws.collect(done(pid))
    got = frames(messages)
    assert 1 <= len(got) <= 20 and all(f.type == 1 and f.image_format == 1 for f in got)
    assert {f.size() for f in got} == {(32, 32)}
    assert frames_inside_node(messages, "sample")
    ws.close()


def test_preview_method_none_sends_no_frame(models, tmp_path):
    srv = PreviewServer(tmp_path / "data", _runtime(models, tmp_path / "work"), "none").start()
    try:
        cid, ws = _open(srv)
        pid = Api(srv.url).queue(flux_prompt(steps=4, seed=2), cid)
        messages = ws.collect(done(pid))
        assert frames(messages) == []
        progress = [m["data"]["value"] for m in messages if isinstance(m, dict) and m["type"] == "progress"]
        assert progress == [1, 2, 3, 4]
        ws.close()
    finally:
        srv.stop()


def test_a_client_that_is_behind_misses_previews_and_is_never_dropped_for_them(tmp_path):
    """Previews are the one message a client may miss: one whose outbox already holds more than
    PREVIEW_BACKLOG_BYTES gets no more of them, and they never count towards dropping it."""
    from server.ws import PREVIEW_BACKLOG_BYTES

    srv = ServerThread(tmp_path / "data").start()
    try:
        hub = srv.app[STATE].hub
        stalled_id, reader_id = client_id(), client_id()
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", srv.port))
        ws_handshake(srv.port, stalled_id, stalled)  # and then never reads
        reader = PreviewClient(f"ws://127.0.0.1:{srv.port}/ws?clientId={reader_id}")
        reader.hello()
        reader.collect(lambda m: m["type"] == "feature_flags", 10)
        frame = {"metadata": events.preview_metadata("3", "p"), "image": b"\xff\xd8" + bytes(64 * 1024)}

        async def send() -> int:  # 8 MiB of previews to each, with no chance to send any yet
            for _ in range(128):
                hub.send(PREVIEW_EVENT, frame, stalled_id)
                hub.send(PREVIEW_EVENT, frame, reader_id)
            hub.send("test_done", {}, reader_id)
            return max(box.bytes for box in hub._outbox.values())

        queued = asyncio.run_coroutine_threadsafe(send(), srv.loop).result(10)
        assert queued <= PREVIEW_BACKLOG_BYTES + len(frame["image"]) + 1024
        assert hub.dropped == 0 and hub.connections == 2
        got = reader.collect(lambda m: m["type"] == "test_done")
        # The reader missed what did not fit either, but the frames it got are whole.
        assert 1 <= len(frames(got)) < 128 and all(f.image == frame["image"] for f in frames(got))
        reader.close()
        stalled.close()
    finally:
        srv.stop()
