"""ComfyUI's prompt weighting for FLUX's text encoders: `(word:1.3)` gives its tokens weight
1.3, `(word)` multiplies the weight around it by 1.1 (nesting multiplies again; an explicit
`:w` replaces the weight), `\\(` and `\\)` are literal parentheses. As in ComfyUI (sd1_clip.py at
a125cd8, read for behaviour):

- The prompt is cut into segments of one weight, and each segment is tokenized on its own, so a
  prompt with parentheses tokenizes as ComfyUI's does (the parentheses are not tokens). A prompt
  without any tokenizes exactly as before: one segment.
- T5-XXL: the segments' tokens, `</s>`, padding to at least 256. When a weight is not 1, the
  empty prompt (`</s>` and padding, as long) is encoded too, and each weighted token's
  embedding becomes empty + (token - empty) * weight.
- CLIP-L gives FLUX only its pooled vector, which ComfyUI takes from the first 77-token window
  before any weighting, so weights do not change it; the window is filled segment by segment as
  ComfyUI fills it (a segment of fewer than 8 tokens that would not fit moves whole to the next
  window, a longer one is cut).

`embedding:name` textual inversions are not supported: the words are encoded as written."""

from __future__ import annotations

from collections.abc import Iterator

import torch

CLIP_WINDOW = 77  # CLIP-L's context: start token, 75 tokens, end token
SMALL_GROUP = 8  # ComfyUI's max_word_length: a shorter segment is never cut across windows
NESTED = 1.1  # a plain pair of parentheses multiplies the weight by this


def parse(text: str) -> list[tuple[str, float]]:
    """The prompt as (segment, weight) pairs, in order (empty segments dropped)."""
    # Escaped parentheses stand aside as control characters while the real ones are parsed.
    escaped = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    return [
        (segment.replace("\0\1", ")").replace("\0\2", "("), weight)
        for segment, weight in _weighted(escaped, 1.0)
        if segment
    ]


def _weighted(text: str, weight: float) -> Iterator[tuple[str, float]]:
    for group in _groups(text):
        if len(group) >= 2 and group[0] == "(" and group[-1] == ")":
            inner, inner_weight = group[1:-1], weight * NESTED
            head, colon, tail = inner.rpartition(":")
            if colon and head:  # "(text:1.2)"; a weight that does not parse stays part of the text
                try:
                    inner, inner_weight = head, float(tail)
                except ValueError:
                    pass
            yield from _weighted(inner, inner_weight)
        else:
            yield group, weight


def _groups(text: str) -> list[str]:
    """Top-level pieces: runs of plain text and balanced "(...)" groups. An unmatched ")" sinks
    the depth below zero and is kept as text, as ComfyUI's parser does."""
    groups: list[str] = []
    current, depth = "", 0
    for char in text:
        if char == "(" and depth == 0:
            if current:
                groups.append(current)
            current = ""
        if char == ")" and depth == 1:
            groups.append(current + char)
            current, depth = "", 0
            continue
        current += char
        depth += {"(": 1, ")": -1}.get(char, 0)
    if current:
        groups.append(current)
    return groups


def _segment_tokens(tokenizer, segment: str, has_start: bool) -> list[int]:
    """One segment's token ids without the tokenizer's start and end tokens."""
    ids = tokenizer(segment).input_ids
    return ids[1 if has_start else 0 : -1]


def t5_tokens(tokenizer, text: str, min_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's token ids [1, L] and each token's weight [L]: the segments' tokens, `</s>`, padded
    with the pad token to at least `min_length`, never truncated."""
    ids: list[int] = []
    weights: list[float] = []
    for segment, weight in parse(text):
        tokens = _segment_tokens(tokenizer, segment, has_start=False)
        ids += tokens
        weights += [weight] * len(tokens)
    ids.append(tokenizer.eos_token_id)
    weights.append(1.0)
    padding = max(min_length - len(ids), 0)
    ids += [tokenizer.pad_token_id] * padding
    weights += [1.0] * padding
    return torch.tensor([ids]), torch.tensor(weights)


def t5_empty_tokens(tokenizer, length: int) -> torch.Tensor:
    """The empty prompt as long as a weighted one: `</s>`, then padding."""
    return torch.tensor([[tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (length - 1)])


def apply_weights(embeds: torch.Tensor, empty: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """embeds [1, L, D] with each token moved away from (or towards) the empty prompt's embedding
    at its position by its weight; tokens of weight 1 are left exactly as they are."""
    out = embeds.clone()
    for j in torch.nonzero(weights != 1.0).flatten().tolist():
        out[:, j] = (embeds[:, j] - empty[:, j]) * float(weights[j]) + empty[:, j]
    return out


def clip_first_window(tokenizer, text: str) -> torch.Tensor:
    """CLIP's token ids [1, 77] of the first window, filled as ComfyUI fills it."""
    window = [tokenizer.bos_token_id]
    room = CLIP_WINDOW - 1  # the end token always follows
    for segment, _ in parse(text):
        group = _segment_tokens(tokenizer, segment, has_start=True)
        if len(window) + len(group) <= room:
            window += group
            continue
        if len(group) >= SMALL_GROUP:  # a long segment is cut at the window's edge
            window += group[: room - len(window)]
        break  # a short one would start the next window, which FLUX does not use
    window.append(tokenizer.eos_token_id)
    window += [tokenizer.pad_token_id] * (CLIP_WINDOW - len(window))
    return torch.tensor([window])
