"""The demo model as ComfyUI's single files, so that a user without weights can try every path
that real ComfyUI files take (and ComfyUI's templates run with it): written from the demo
pipeline folder by `fluxloom demo-model --format comfyui`, and on a machine with no model at all.
Tests use the same writer. All names start with `fluxloom-demo`, which is how the demo is told
apart from real models (nodes/flux/catalog.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nodes.flux.demo import DEMO_NAME, ensure_demo_model

log = logging.getLogger("fluxloom.models")

# What is written, relative to the models folder: ComfyUI's folder for each kind of file.
DEMO_FILES = {
    "transformer": f"diffusion_models/{DEMO_NAME}.safetensors",
    "gguf": f"diffusion_models/{DEMO_NAME}-Q8_0.gguf",
    "clip_l": f"text_encoders/{DEMO_NAME}-clip_l.safetensors",
    "t5xxl": f"text_encoders/{DEMO_NAME}-t5xxl.safetensors",
    "vae": f"vae/{DEMO_NAME}-ae.safetensors",
    "checkpoint": f"checkpoints/{DEMO_NAME}-checkpoint.safetensors",
    "lora": f"loras/{DEMO_NAME}-lora.safetensors",
}


def demo_files_present(models_dir: Path | str) -> bool:
    return all((Path(models_dir) / rel).is_file() for rel in DEMO_FILES.values())


def ensure_demo_files(models_dir: Path | str, *, force: bool = False) -> dict[str, Path]:
    """Write the demo's single files (building the demo pipeline first if needed); unless they
    are all there already. Each file is written beside its place and renamed into it, so an
    interrupted run never leaves a half-written model that would be offered."""
    models_dir = Path(models_dir)
    paths = {key: models_dir / rel for key, rel in DEMO_FILES.items()}
    if not force and demo_files_present(models_dir):
        return paths
    pipeline = ensure_demo_model(models_dir)
    log.info("writing the demo model as ComfyUI single files under %s", models_dir)
    parts = _load_parts(pipeline)
    for key, path in paths.items():
        _write_atomically(path, lambda tmp, key=key: _write(key, tmp, parts))
    return paths


def _load_parts(pipeline: Path) -> dict:
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    return {
        "transformer": FluxTransformer2DModel.from_pretrained(pipeline, subfolder="transformer"),
        "vae": AutoencoderKL.from_pretrained(pipeline, subfolder="vae"),
        "clip_l": CLIPTextModel.from_pretrained(pipeline, subfolder="text_encoder"),
        "t5xxl": T5EncoderModel.from_pretrained(pipeline, subfolder="text_encoder_2"),
    }


def _write(key: str, path: Path, parts: dict) -> None:
    from safetensors.torch import save_file

    from nodes.flux.formats import writers
    from nodes.flux.lora_writers import random_lora, write_kohya

    # The demo's own dtype (fp32): the single files hold exactly the folder's weights.
    if key == "transformer":
        writers.write_bfl_transformer(parts["transformer"], path, dtype=None)
    elif key == "gguf":
        writers.write_gguf_transformer(parts["transformer"], path, "Q8_0")
    elif key in ("clip_l", "t5xxl"):
        state = writers.text_encoder_state(parts[key])
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif key == "vae":
        writers.write_bfl_vae(parts["vae"], path)
    elif key == "checkpoint":
        writers.write_all_in_one(
            path,
            transformer=parts["transformer"],
            vae=parts["vae"],
            clip=parts["clip_l"],
            t5=parts["t5xxl"],
            dtype=None,
        )
    else:
        write_kohya(path, random_lora(parts["transformer"]))  # the layout most FLUX LoRAs have


def _write_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
