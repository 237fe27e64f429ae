"""What each model loader offers: diffusers pipeline folders (`MODELS/diffusers/NAME/`, offered as
NAME) and single files found by content in ComfyUI's folders (`diffusion_models/`, `unet/`,
`checkpoints/`, `text_encoders/`, `clip/`, `vae/`, `loras/`, and the folders of an
`extra_model_paths.yaml`), offered by their path relative to their folder, as ComfyUI names them.

An all-in-one checkpoint is offered by every loader whose part it holds. Kinds are the model
parts: "FLUX_MODEL", "CLIP" (CLIP-L), "T5", "VAE", and "LORA".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nodes.flux.demo import DEMO_NAME  # the demo's pipeline folder, and the start of its files' names
from nodes.flux.formats.detect import detect_file
from nodes.flux.formats.discovery import ExtraModelPathsError, find_model_files
from nodes.flux.sources import PARTS, ModelSourceError, find_pipelines

log = logging.getLogger("fluxloom.models")
# The part of an all-in-one checkpoint each kind loads (detect.Detected.parts names them).
CHECKPOINT_PART = {"FLUX_MODEL": None, "CLIP": "CLIP", "T5": "T5", "VAE": "VAE"}


def extra_paths(env: Any) -> tuple[Path, ...]:
    return tuple(getattr(env, "extra_model_paths", ()) or ())


def model_files(env: Any, kind: str) -> dict[str, Path]:
    """Single files offered for `kind` (name → path), checkpoints holding that part included."""
    models_dir = getattr(env, "models_dir", None)
    try:
        found = find_model_files(models_dir, extra_paths(env))
    except ExtraModelPathsError as exc:  # e.g. the yaml beside the models folder was broken since
        log.error("model folders not listed: %s", exc)
        return {}
    files = dict(found.get(kind, {}))
    if kind in CHECKPOINT_PART:
        part = CHECKPOINT_PART[kind]
        for name, path in found.get("CHECKPOINT", {}).items():
            detected = detect_file(path)
            if part is None or (detected is not None and part in detected.parts):
                files.setdefault(name, path)
    return files


def sources(env: Any, kind: str) -> dict[str, Path]:
    """Everything a loader of `kind` offers: pipelines that have the part, then single files."""
    models_dir = getattr(env, "models_dir", None)
    offered: dict[str, Path] = {}
    if models_dir is not None and kind in PARTS:
        sub = PARTS[kind].subfolder
        offered.update((n, p) for n, p in find_pipelines(models_dir).items() if (p / sub).is_dir())
    for name, path in model_files(env, kind).items():
        offered.setdefault(name, path)
    return offered


def source_choices(env: Any, kind: str) -> list[str]:
    return list(sources(env, kind)) if env is not None else []


def source_path(env: Any, name: str, kind: str) -> Path:
    """The folder or file a loader's `source` names, or an error listing what is installed."""
    found = sources(env, kind).get(name)
    if found is None:
        installed = ", ".join(sources(env, kind)) or "none"
        raise ModelSourceError(
            f"model {name!r} is not installed under {env.models_dir} (installed for this loader: {installed})"
        )
    return found


def any_model_installed(env: Any) -> bool:
    return any(sources(env, kind) for kind in ("FLUX_MODEL", "CLIP", "T5", "VAE"))


def is_demo(name: str) -> bool:
    return name == DEMO_NAME or Path(name).name.startswith(DEMO_NAME)


def demo_only(env: Any) -> bool:
    """The one rule for "only the demo model is installed": every model offered is the demo
    (its pipeline folder, or the single files `fluxloom demo-model --format comfyui` writes)."""
    names = [n for kind in ("FLUX_MODEL", "CLIP", "T5", "VAE") for n in sources(env, kind)]
    return bool(names) and all(is_demo(n) for n in names)


def demo_source(env: Any, kind: str, hint: str = "") -> str | None:
    """The demo's entry in a loader's choices: its pipeline for fluxloom's loaders, its single
    file for ComfyUI's (which list files only). `hint` is the missing name (a T5 named
    "t5xxl_fp16.safetensors" is replaced by the demo T5 in a loader that lists both encoders)."""
    choices = [n for n in sources(env, kind) if is_demo(n)]
    if not choices:
        return None
    if DEMO_NAME in choices:
        return DEMO_NAME
    return choices[0]
