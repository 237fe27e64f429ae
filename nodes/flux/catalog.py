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


MODEL_KINDS = ("FLUX_MODEL", "CLIP", "T5", "VAE")


def inventory(env: Any) -> dict[str, dict[str, Path]]:
    """Everything offered, by kind ("FLUX_MODEL", "CLIP", "T5", "VAE", "LORA", "CHECKPOINT"), from
    one look at the folders: pipelines that have the part, then single files (checkpoints under
    every kind whose part they hold). Read afresh on each call, so a model added is offered at
    once; detection is cached per file, so a call costs a folder listing."""
    models_dir = getattr(env, "models_dir", None) if env is not None else None
    try:
        found = find_model_files(models_dir, extra_paths(env))
    except ExtraModelPathsError as exc:  # e.g. the yaml beside the models folder was broken since
        log.error("model folders not listed: %s", exc)
        found = {}
    pipelines = find_pipelines(models_dir) if models_dir is not None else {}
    offered: dict[str, dict[str, Path]] = {}
    for kind in (*MODEL_KINDS, "LORA", "CHECKPOINT"):
        names: dict[str, Path] = {}
        if kind in PARTS:
            sub = PARTS[kind].subfolder
            names.update((n, p) for n, p in pipelines.items() if (p / sub).is_dir())
        for name, path in found.get(kind, {}).items():
            names.setdefault(name, path)
        if kind in CHECKPOINT_PART:
            part = CHECKPOINT_PART[kind]
            for name, path in found.get("CHECKPOINT", {}).items():
                detected = detect_file(path)
                if part is None or (detected is not None and part in detected.parts):
                    names.setdefault(name, path)
        offered[kind] = names
    return offered


def model_files(env: Any, kind: str) -> dict[str, Path]:
    """Single files (and pipelines) offered for `kind`: see inventory()."""
    return inventory(env)[kind]


def sources(env: Any, kind: str) -> dict[str, Path]:
    """Everything a loader of `kind` offers: pipelines that have the part, then single files."""
    return inventory(env)[kind]


def source_choices(env: Any, kind: str) -> list[str]:
    return list(sources(env, kind)) if env is not None else []


def source_path(env: Any, name: str, kind: str) -> Path:
    """The folder or file a loader's `source` names, or an error listing what is installed."""
    offered = sources(env, kind)
    found = offered.get(name)
    if found is None:
        installed = ", ".join(offered) or "none"
        raise ModelSourceError(
            f"model {name!r} is not installed under {env.models_dir} (installed for this loader: {installed})"
        )
    return found


def any_model_installed(env: Any) -> bool:
    offered = inventory(env)
    return any(offered[kind] for kind in MODEL_KINDS)


def is_demo(name: str) -> bool:
    return name == DEMO_NAME or Path(name).name.startswith(DEMO_NAME)


def demo_only(env: Any, offered: dict[str, dict[str, Path]] | None = None) -> bool:
    """The one rule for "only the demo model is installed": every model offered is the demo
    (its pipeline folder, or the single files `fluxloom demo-model --format comfyui` writes)."""
    offered = offered if offered is not None else inventory(env)
    names = [n for kind in MODEL_KINDS for n in offered[kind]]
    return bool(names) and all(is_demo(n) for n in names)


def demo_source(offered: dict[str, dict[str, Path]], kind: str) -> str | None:
    """The demo's entry among a loader's choices (`offered`: an inventory()): its pipeline folder
    when there is one (every loader offers it), else its single file."""
    choices = [n for n in offered.get(kind, {}) if is_demo(n)]
    if not choices:
        return None
    return DEMO_NAME if DEMO_NAME in choices else choices[0]
