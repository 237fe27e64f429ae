"""Live previews while a sampler runs: the sampler's latent at a step, turned into a small JPEG
for the websocket, cheaply enough to leave sampling as fast as without.

A node hands its preview to `ctx.progress(value, total, preview)`; nodes/ never sees this module.
A preview is one of:
- a latent tensor [B, 16, h, w] in the sampler's space ((raw - shift) * scale, where FLUX's
  sampler and ComfyUI's samplers work), best the denoised estimate of that step;
- a zero-argument function returning one (a sampler then computes the estimate only for the few
  steps that are drawn);
- a PIL image, or ComfyUI's `("JPEG" | "PNG", image, max_size)` tuple (custom nodes ported from
  ComfyUI report those).

Cost: on the sampling thread a step costs a clock read and a comparison; at most one preview per
`min_interval_s` (never two of one step, and only while somebody is connected to see it) costs
the projection of its latent to a small RGB array there too. Enlarging and JPEG encoding run on
one background thread that keeps only the newest preview waiting, so a slow encoder drops old
frames instead of queueing them.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server import events

log = logging.getLogger("fluxloom.previews")

METHODS = ("auto", "latent2rgb", "none")
# What travels from the worker to the websocket hub (never sent as JSON): {"metadata", "image"}.
PREVIEW_EVENT = "fluxloom.preview"
MAX_SIZE = 512  # longest side of a preview, in pixels (ComfyUI's --preview-size default)
MIN_INTERVAL_S = 0.25  # at most four previews a second
JPEG_QUALITY = 80
UPSCALE_MAX = 8  # a latent cell is 8 pixels: a tiny latent grows at most to the image's size

# FLUX.1's latent -> RGB projection: the factors and bias ComfyUI publishes for FLUX in
# comfy/latent_formats.py (`Flux.latent_rgb_factors`, `latent_rgb_factors_bias`), taken as the
# numbers they are; they apply to latents in the sampler's space and give RGB in -1..1. Not
# fitted here: that needs FLUX's real VAE, which no test or build may download.
FLUX_RGB_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_RGB_BIAS = (-0.0329, -0.0718, -0.0851)


def check_method(method: str) -> str:
    """The method a `--preview-method` value means: auto is latent2rgb (the only one fluxloom
    has; ComfyUI's TAESD previews need a model download)."""
    if method not in METHODS:
        raise ValueError(f"unknown preview method {method!r}; choose one of {', '.join(METHODS)}")
    return "latent2rgb" if method == "auto" else method


# --- from a preview to an image -----------------------------------------------------------------
# Two stages. `capture` runs on the sampling thread, only for the previews that are drawn: the
# latent's tensor work (the denoised estimate, the projection) stays on the thread and device
# stream that own it (a CPU tensor op on another thread would start a second OpenMP team beside
# the sampler's, and a CUDA copy there would wait for the sampler's stream), and leaves a small
# uint8 RGB array (on a CUDA device, copied to pinned host memory without waiting, with an event
# that marks the copy done). `image` and `encode_jpeg` run on the encoder thread: enlarge, bound,
# JPEG, all in Pillow (C code that releases the GIL).


@dataclass
class Captured:
    """A preview taken from the sampler: RGB pixels [h, w, 3] uint8 on the host (a tensor) or a
    PIL image, and what must happen before they can be read (a CUDA event; None: nothing)."""

    pixels: Any
    ready: Any = None
    enlarge: bool = True  # a latent's pixels are cells: enlarge them when tiny
    max_size: int | None = None  # a smaller bound the preview asked for (ComfyUI's tuple)


def latent_to_rgb(latent: Any) -> Any:
    """The first image of a [B, 16, h, w] latent projected to RGB: a uint8 tensor [h, w, 3] on
    the latent's device."""
    import torch

    x = latent[0] if latent.ndim == 4 else latent
    if x.ndim != 3 or x.shape[0] != len(FLUX_RGB_FACTORS):
        raise ValueError(f"a latent preview needs 16 channels [B, 16, h, w], got {tuple(latent.shape)}")
    x = x.detach().float()
    factors = torch.tensor(FLUX_RGB_FACTORS, dtype=x.dtype, device=x.device)
    bias = torch.tensor(FLUX_RGB_BIAS, dtype=x.dtype, device=x.device)
    rgb = torch.einsum("chw,cr->hwr", x, factors) + bias  # -1..1
    return ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


def capture(preview: Any) -> Captured | None:
    """The sampling thread's part of a preview (see the module doc); None: nothing to show."""
    from PIL import Image

    if callable(preview):
        preview = preview()
    if isinstance(preview, tuple) and len(preview) == 3 and isinstance(preview[1], Image.Image):
        return Captured(preview[1], enlarge=False, max_size=preview[2] or None)  # ComfyUI's tuple
    if isinstance(preview, Image.Image):
        return Captured(preview, enlarge=False)
    if not (hasattr(preview, "ndim") and hasattr(preview, "shape")):
        return None
    rgb = latent_to_rgb(preview)
    if rgb.device.type != "cuda":
        return Captured(rgb.cpu())
    import torch

    host = torch.empty(rgb.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(rgb, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return Captured(host, ready)


def image(captured: Captured, max_size: int = MAX_SIZE) -> Any:
    """The encoder thread's PIL image of a capture: at most `max_size` on its longest side, a
    tiny latent enlarged (nearest, by a whole factor, at most to the image's own size)."""
    from PIL import Image

    if captured.ready is not None:
        captured.ready.synchronize()
    max_size = min(max_size, captured.max_size or max_size)
    if isinstance(captured.pixels, Image.Image):
        picture = captured.pixels.convert("RGB")
    else:
        picture = Image.fromarray(captured.pixels.numpy(), "RGB")
    factor = min(UPSCALE_MAX, max_size // max(picture.size)) if captured.enlarge else 1
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    if max(picture.size) > max_size:
        picture.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    return picture


def encode_jpeg(picture: Any, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


# --- one prompt's previews ----------------------------------------------------------------------

Send = Callable[[dict[str, Any], bytes], None]  # (metadata, jpeg)


@dataclass
class _Job:
    stream: PromptPreviews
    generation: int
    node: str
    captured: Captured


class PromptPreviews:
    """The previews of one running prompt: the executor's `on_preview` (on the sampling thread),
    and a listener wrapper that ends a node's previews when any other event than `progress`
    comes (the node finished, failed or another began): a frame still being encoded then is
    dropped, never sent after that event."""

    def __init__(
        self, renderer: PreviewRenderer, prompt_id: str, send: Send, wanted: Callable[[], bool]
    ) -> None:
        self.renderer, self.prompt_id, self.send, self.wanted = renderer, prompt_id, send, wanted
        self.generation = 0
        self.lock = threading.Lock()  # orders a frame's send against the events that end its node
        self._last_at = float("-inf")
        self._last_step: tuple[str, int] | None = None
        self.offered = 0  # steps that came with a preview
        self.sent = 0  # frames sent
        self.failed = 0  # previews that could not be drawn

    def __call__(self, node: str, value: int, total: int, preview: Any) -> None:
        self.offered += 1
        now = time.monotonic()
        step = (node, value)
        if step == self._last_step or now - self._last_at < self.renderer.min_interval_s:
            return
        if not self.wanted():
            return
        self._last_at, self._last_step = now, step
        try:
            captured = capture(preview)
        except Exception as exc:  # a preview never fails a prompt: say why, once per prompt
            self.not_drawn(node, exc)
            return
        if captured is not None:
            self.submit(node, captured)

    def submit(self, node: str, captured: Captured) -> None:
        """Hand a captured preview to the encoder thread (no throttle)."""
        self.renderer.submit(_Job(self, self.generation, node, captured))

    def not_drawn(self, node: str, exc: Exception) -> None:
        if not self.failed:
            log.warning("preview of node %s not drawn: %s", node, events.exception_message(exc))
        self.failed += 1

    def wrap(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[str, dict[str, Any]], None]:
        def wrapped(event: str, data: dict[str, Any]) -> None:
            if event != "progress":
                self.cut()
            listener(event, data)

        return wrapped

    def cut(self) -> None:
        """No frame of what was offered until now may be sent any more."""
        with self.lock:
            self.generation += 1

    def deliver(self, job: _Job, jpeg: bytes) -> None:
        with self.lock:
            if job.generation != self.generation:
                return
            self.send(events.preview_metadata(job.node, self.prompt_id), jpeg)
            self.sent += 1


class PreviewRenderer:
    """Turns previews into JPEG frames on one background thread (started on the first frame)
    that keeps only the newest job waiting. One per server or worker process."""

    def __init__(
        self,
        method: str = "auto",
        max_size: int = MAX_SIZE,
        min_interval_s: float = MIN_INTERVAL_S,
        quality: int = JPEG_QUALITY,
    ) -> None:
        self.method = check_method(method)
        self.max_size, self.min_interval_s, self.quality = max_size, min_interval_s, quality
        self._pending: _Job | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self.dropped = 0  # jobs replaced by a newer one before they were encoded
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def for_prompt(
        self, prompt_id: str, send: Send, wanted: Callable[[], bool] = lambda: True
    ) -> PromptPreviews | None:
        """The previews of one prompt, or None when previews are off."""
        return PromptPreviews(self, prompt_id, send, wanted) if self.enabled else None

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                return
            if self._pending is not None:
                self.dropped += 1
            self._pending = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="fluxloom-previews", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until no frame is waiting or being encoded (tests, benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                job, self._pending, self._busy = self._pending, None, True
            try:
                self._render(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _render(self, job: _Job) -> None:
        if job.generation != job.stream.generation:  # its node ended while it waited
            return
        try:
            jpeg = encode_jpeg(image(job.captured, self.max_size), self.quality)
        except Exception as exc:
            self.failed += 1
            job.stream.not_drawn(job.node, exc)
            return
        job.stream.deliver(job, jpeg)
