"""ComfyUI's prompt weighting in CLIPTextEncode (nodes/comfy/prompt_weights.py): the parser's
rules (written out here from ComfyUI's behaviour at a125cd8), prompts without parentheses
tokenized exactly as before, CLIP-L's first window filled segment by segment, and on the tiny
real T5 a weighted token moved from the empty prompt's embedding by exactly its weight."""

from __future__ import annotations

import pytest
import torch
from transformers import T5TokenizerFast

from nodes.comfy import prompt_weights as pw
from nodes.flux import assets
from tests.comfy_nodes.graphs import keep, models, text, value_of
from tests.flux.builders import model_dir


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (cat:1.2) sits", [("a ", 1.0), ("cat", 1.2), (" sits", 1.0)]),
        ("(cat)", [("cat", pytest.approx(1.1))]),
        ("((cat)) b", [("cat", pytest.approx(1.21)), (" b", 1.0)]),
        ("((cat:1.5))", [("cat", 1.5)]),  # an explicit weight replaces the nested one
        ("(a (b:0.5) c:2)", [("a ", 2.0), ("b", 0.5), (" c", 2.0)]),
        ("(a:b)", [("a:b", pytest.approx(1.1))]),  # not a number: part of the text
        ("(c:1.5:2)", [("c:1.5", 2.0)]),  # the last colon
        ("(:2)", [(":2", pytest.approx(1.1))]),  # a colon first is text
        ("x \\(y\\) z", [("x (y) z", 1.0)]),  # escaped parentheses are literal
        ("a) (b)", [("a) (b)", 1.0)]),  # an unmatched ")" keeps what follows as text
        ("()", []),
        ("a (b", [("a ", 1.0), ("(b", 1.0)]),  # unclosed: text
    ],
)
def test_parse_follows_comfyui(prompt, expected):
    assert pw.parse(prompt) == expected


LONG = " ".join(f"word{i}" for i in range(60))  # well past 77 CLIP tokens


@pytest.mark.parametrize("prompt", ["a red fox", LONG, ""])
def test_prompts_without_weights_tokenize_as_before(prompt):
    clip, t5 = assets.clip_tokenizer(), assets.t5_tokenizer()
    before = clip(
        [prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    assert torch.equal(pw.clip_first_window(clip, prompt), before)
    length = max(256, len(t5(prompt).input_ids))
    before = t5([prompt], padding="max_length", max_length=length, return_tensors="pt").input_ids
    ids, weights = pw.t5_tokens(t5, prompt, 256)
    assert torch.equal(ids, before) and bool((weights == 1).all())


def test_clip_window_moves_a_short_segment_whole_and_cuts_a_long_one():
    clip = assets.clip_tokenizer()
    head = " ".join(["cat"] * 74)  # the start token and 74 tokens: one place left before the end token
    assert len(clip_tokens(clip, head)) == 74
    short = clip_tokens(clip, "red fox")
    window = pw.clip_first_window(clip, f"{head}(red fox:1.2)")[0].tolist()
    assert window[75] == clip.eos_token_id and short[0] not in window  # the short segment moved on
    long = " ".join(["dog"] * 10)
    window = pw.clip_first_window(clip, f"{head}({long}:1.2)")[0].tolist()
    assert window[75] == clip_tokens(clip, long)[0] and window[76] == clip.eos_token_id


def clip_tokens(tokenizer, words: str) -> list[int]:
    return tokenizer(words).input_ids[1:-1]


def test_weights_move_tokens_from_the_empty_prompt(rt, comfy_models):
    """e(w) = e_empty + (e(1) - e_empty) * w on the weighted tokens, the rest untouched; CLIP-L's
    pooled vector is not weighted."""
    prompt = models("tiny-dev")
    conds = {}
    for key, words in (("one", "a (red:1.0) fox"), ("heavy", "a (red:1.5) fox"), ("empty", "")):
        prompt[key] = text(words)
        prompt[f"keep_{key}"] = keep([key, 0])
    for key in ("one", "heavy", "empty"):
        conds[key] = value_of(rt, prompt, key)
    tokenizer = T5TokenizerFast.from_pretrained(model_dir(comfy_models, "tiny-dev") / "tokenizer_2")
    _, weights = pw.t5_tokens(tokenizer, "a (red:1.5) fox", 256)
    weighted = weights != 1.0
    assert int(weighted.sum()) >= 1
    one, heavy = conds["one"].prompt_embeds, conds["heavy"].prompt_embeds
    empty = conds["empty"].prompt_embeds
    assert one.shape == heavy.shape == empty.shape == (1, 256, one.shape[-1])
    expected = empty[:, weighted] + (one[:, weighted] - empty[:, weighted]) * 1.5
    assert torch.allclose(heavy[:, weighted], expected, atol=1e-6)
    assert not torch.allclose(heavy[:, weighted], one[:, weighted])
    assert torch.equal(heavy[:, ~weighted], one[:, ~weighted])
    assert torch.equal(conds["heavy"].pooled_prompt_embeds, conds["one"].pooled_prompt_embeds)
