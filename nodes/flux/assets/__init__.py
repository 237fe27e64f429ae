"""Tokenizers and configs shipped with fluxloom, so that a single-file model needs nothing from a
hub (README.md beside this file says where each file comes from and under which licence).

- `clip_tokenizer()`: CLIP-L's tokenizer (49,408 tokens, padded to 77), as FLUX.1's `tokenizer/`.
- `t5_tokenizer()`: T5-XXL's SentencePiece tokenizer (32,100 pieces; the model has 32,128 rows),
  as FLUX.1's `tokenizer_2/`.
- `config(name)`: a shipped config as a dict: "clip-l", "t5-xxl", and the diffusers component
  configs "flux1-dev/transformer", "flux1-schnell/vae", "flux1-dev/scheduler", ...
- `config_dir(model)`: a diffusers-style folder ("flux1-dev", "flux1-schnell") with
  `transformer/config.json`, `vae/config.json` and `scheduler/scheduler_config.json`, for
  diffusers' `load_config(..., subfolder=...)` and `from_single_file(..., config=...)`.

Each call builds a new tokenizer (the parsed files are cached), so a caller may change it freely.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent
TOKENIZERS = ASSETS / "tokenizers"
CONFIGS = ASSETS / "configs"

CLIP_VOCAB_SIZE = 49408  # CLIP-L's vocabulary, token embedding rows
T5_VOCAB_SIZE = 32128  # T5 v1.1's embedding rows (32,100 pieces, padded to a multiple of 128)
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 512


@functools.cache
def _clip_files() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    folder = TOKENIZERS / "clip-l"
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = tuple(tuple(line.split(" ")) for line in lines[1:] if line)  # line 0: "#version: 0.2"
    return vocab, merges


def clip_tokenizer():
    """CLIP-L's tokenizer: `<|startoftext|>` 49406, `<|endoftext|>` 49407 (also the pad token)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_files()
    # merges must be tuples for tokenizers 0.23 (see DESIGN.md section 9).
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH)


def t5_tokenizer():
    """T5 v1.1's tokenizer: `<pad>` 0, `</s>` 1, `<unk>` 2, `<extra_id_0..99>` 32,000..32,099."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(
        tokenizer_file=str(TOKENIZERS / "t5-xxl" / "tokenizer.json"),
        extra_ids=100,
        model_max_length=T5_MAX_LENGTH,
    )


def config(name: str) -> dict[str, Any]:
    """A shipped config by name: "clip-l", "t5-xxl", or "<model>/<component>" such as
    "flux1-dev/transformer"."""
    folder = CONFIGS / name
    for file in (folder / "config.json", folder / "scheduler_config.json"):
        if file.is_file():
            return json.loads(file.read_text(encoding="utf-8"))
    known = sorted(str(p.parent.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.json"))
    raise KeyError(f"no shipped config {name!r}; known: {', '.join(known)}")


def config_dir(model: str) -> Path:
    """The diffusers-style config folder of "flux1-dev" or "flux1-schnell"."""
    folder = CONFIGS / model
    if not (folder / "transformer" / "config.json").is_file():
        raise KeyError(f"no shipped config folder {model!r}; known: flux1-dev, flux1-schnell")
    return folder
