"""Finding the model files of a ComfyUI install: its model folders under the models folder, plus
the folders an `extra_model_paths.yaml` adds, each file classified by content (detect.py).

Public API:
- `find_model_files(models_dir, extra_paths_files=()) -> {kind: {name: Path}}` for every kind of
  `detect.KINDS` ("FLUX_MODEL", "CHECKPOINT", "CLIP", "T5", "VAE", "LORA"), names sorted. A name
  is the file's path relative to the model folder it was found in, with '/' (`flux/dev.gguf`),
  as ComfyUI names them; when two folders hold the same name, the first in search order wins.
- `model_folders(models_dir, extra_paths_files=()) -> {folder type: [folders]}`: the search order.
- `read_extra_model_paths(file) -> [(folder type, folder, is_default)]`.
- `ExtraModelPathsError`: a malformed yaml; the message names the file and the problem.

Folders searched (ComfyUI's names; `unet` and `clip` are its older names, read as
`diffusion_models` and `text_encoders`): `diffusion_models/`, `unet/`, `checkpoints/`,
`text_encoders/`, `clip/`, `vae/`, `loras/`, with their subfolders. Every file in them is offered
by what it holds, whichever folder it is in (a T5 in `checkpoints/` is still a T5). Folders holding
a diffusers pipeline (`model_index.json`) are skipped: sources.py offers those.

`extra_model_paths.yaml` (ComfyUI's format, see its `extra_model_paths.yaml.example`): named
sections, each with an optional `base_path` (`~` and `$VARS` expanded; relative to the yaml's
folder when relative), an optional `is_default: true` (its folders are searched first), and
folder types mapped to one path or several (a `|` block, one per line, or a list), each relative
to `base_path` (or, without one, to the yaml's folder). Folder types fluxloom does not use
(`controlnet`, `embeddings`, ...) are ignored. Given explicitly, or found as ComfyUI does: the
`extra_model_paths.yaml` next to the models folder (in the ComfyUI folder that holds `models/`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from nodes.flux.formats.detect import KINDS, SUFFIXES, detect_file

FOLDER_TYPES = ("diffusion_models", "checkpoints", "text_encoders", "vae", "loras")
# ComfyUI's folder names on disk for each folder type, in its order; unet/ and clip/ are legacy.
DISK_NAMES = {
    "diffusion_models": ("diffusion_models", "unet"),
    "checkpoints": ("checkpoints",),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "loras": ("loras",),
}
LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}
EXTRA_PATHS_NAME = "extra_model_paths.yaml"


class ExtraModelPathsError(ValueError):
    """An extra_model_paths.yaml that cannot be read; the message names the file and the problem."""


def find_model_files(
    models_dir: Path | str | None, extra_paths_files: Iterable[Path | str] = ()
) -> dict[str, dict[str, Path]]:
    """Every model file fluxloom can offer, by kind and name (see the module doc)."""
    found: dict[str, dict[str, Path]] = {kind: {} for kind in KINDS}
    for folders in model_folders(models_dir, extra_paths_files).values():
        for folder in folders:
            for name, path in _model_files(folder):
                detected = detect_file(path)
                if detected is not None:
                    found[detected.kind].setdefault(name, path)
    return {kind: dict(sorted(names.items())) for kind, names in found.items()}


def model_folders(
    models_dir: Path | str | None, extra_paths_files: Iterable[Path | str] = ()
) -> dict[str, list[Path]]:
    """Folder type → existing folders in search order: `is_default` extra folders first, then
    the models folder's own, then the other extra folders (as ComfyUI orders them)."""
    files = [Path(f) for f in extra_paths_files]
    if models_dir is not None:
        beside = Path(models_dir).resolve().parent / EXTRA_PATHS_NAME
        if beside.is_file() and not any(_same(beside, f) for f in files):
            files.append(beside)
    first: dict[str, list[Path]] = {t: [] for t in FOLDER_TYPES}
    last: dict[str, list[Path]] = {t: [] for t in FOLDER_TYPES}
    for file in files:
        for folder_type, folder, is_default in read_extra_model_paths(file):
            (first if is_default else last)[folder_type].append(folder)
    order: dict[str, list[Path]] = {}
    for folder_type in FOLDER_TYPES:
        own = [Path(models_dir) / n for n in DISK_NAMES[folder_type]] if models_dir is not None else []
        folders, seen = [], set()
        for folder in [*first[folder_type], *own, *last[folder_type]]:
            key = os.path.normcase(os.path.realpath(folder))
            if key not in seen and folder.is_dir():
                seen.add(key)
                folders.append(folder)
        order[folder_type] = folders
    return order


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _model_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(name relative to root with '/', path) of every candidate file below root, sorted,
    following symbolic links (as ComfyUI does) without walking a folder twice."""
    visited: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited or (Path(folder) / "model_index.json").is_file():
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            path = Path(folder) / name
            yield path.relative_to(root).as_posix(), path


# --- extra_model_paths.yaml -----------------------------------------------------------------


def read_extra_model_paths(file: Path | str) -> list[tuple[str, Path, bool]]:
    """(folder type, folder, is_default) for each folder fluxloom uses that `file` names."""
    import yaml

    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExtraModelPathsError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExtraModelPathsError(f"{file} is not valid YAML: {_yaml_problem(exc)}") from exc
    if config is None:
        return []
    if not isinstance(config, dict):
        raise ExtraModelPathsError(
            f"{file}: expected named sections (such as 'comfyui:' with a base_path and folders), "
            f"found a {type(config).__name__}"
        )
    found = []
    for section, entries in config.items():
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ExtraModelPathsError(
                f"{file}: section {section!r} must map folder names to paths, not be a "
                f"{type(entries).__name__}"
            )
        found += _section(file, str(section), dict(entries))
    return found


def _section(file: Path, section: str, entries: dict) -> list[tuple[str, Path, bool]]:
    where = f"{file}: section {section!r}"
    base = entries.pop("base_path", None)
    is_default = entries.pop("is_default", False)
    if not isinstance(is_default, bool):
        raise ExtraModelPathsError(f"{where}: is_default must be true or false, not {is_default!r}")
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ExtraModelPathsError(f"{where}: base_path must be a folder path, not {base!r}")
        base = _absolute(Path(os.path.expandvars(os.path.expanduser(base.strip()))), file)
    found = []
    for key, value in entries.items():
        folder_type = LEGACY.get(str(key), str(key))
        paths = _paths(where, str(key), value)
        if folder_type not in FOLDER_TYPES:
            continue
        for path in paths:
            expanded = Path(os.path.expandvars(os.path.expanduser(path)))
            folder = base / expanded if base is not None and not expanded.is_absolute() else expanded
            found.append((folder_type, _absolute(folder, file), is_default))
    return found


def _paths(where: str, key: str, value) -> list[str]:
    """One path, several on separate lines (a `|` block), or a list of them."""
    if isinstance(value, str):
        items = value.split("\n")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise ExtraModelPathsError(
            f"{where}: {key!r} must be a folder path, several on separate lines, or a list of paths; "
            f"found {value!r}"
        )
    return [item.strip() for item in items if item.strip()]


def _absolute(path: Path, yaml_file: Path) -> Path:
    return path if path.is_absolute() else (yaml_file.resolve().parent / path)


def _yaml_problem(exc) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem
