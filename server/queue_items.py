"""GET /queue's items, kept as ready UTF-8 JSON while their prompts are queued or running.

ComfyUI's GET /queue carries every queued prompt whole; a prompt of 100,000 nodes makes it
megabytes, and clients poll it. Reading those texts back from SQLite on every poll cost half of
the answer's time while a worker thread competes for the interpreter; an item never changes once
queued, so it is built once (when the prompt is added, or on the first poll after a restart) and
an answer is one join. An item goes when its prompt finishes or is deleted. The items kept are
bounded in bytes; past the bound they are read from SQLite as before."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import AnyStr

BUDGET = 256 * 2**20  # bytes of items kept


Item = tuple[bytes, ...]  # parts of one item's JSON, joined only into the whole answer


def item_parts(prompt_id: str, number: float, prompt: AnyStr, extra_data: AnyStr, outputs: AnyStr) -> tuple:
    """`PromptRow.queue_item()` as JSON, [number, prompt_id, prompt, extra_data, outputs], spliced
    from the stored JSON texts: as bytes from bytes (GET /queue), as str from str (history)."""
    number = int(number) if float(number).is_integer() else number
    head = f"[{json.dumps(number)}, {json.dumps(prompt_id)}, "
    if isinstance(prompt, bytes):
        return (head.encode(), prompt, b", ", extra_data, b", ", outputs, b"]")
    return (head, prompt, ", ", extra_data, ", ", outputs, "]")


class QueueItems:
    """Callers hold the store's lock."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = BUDGET if budget is None else budget
        self._items: dict[str, Item] = {}
        self._bytes = 0

    def put(self, prompt_id: str, item: Item) -> None:
        self.drop(prompt_id)  # a prompt_id used again after its history entry was dropped
        size = sum(map(len, item))
        if self._bytes + size <= self.budget:
            self._items[prompt_id] = item
            self._bytes += size

    def drop(self, prompt_id: str) -> None:
        old = self._items.pop(prompt_id, None)
        if old is not None:
            self._bytes -= sum(map(len, old))

    def answer(
        self, running: list[str], pending: list[str], fetch: Callable[[list[str]], Iterable[tuple[str, Item]]]
    ) -> bytes:
        """GET /queue's answer for these prompt ids (in order); `fetch(ids)` gives the items not
        kept. Items of prompts no longer queued are let go."""
        queued = set(running) | set(pending)
        for prompt_id in [p for p in self._items if p not in queued]:
            self.drop(prompt_id)
        fetched = dict(fetch([p for p in (*running, *pending) if p not in self._items]))
        for prompt_id, item in fetched.items():
            self.put(prompt_id, item)

        def items(ids: list[str]) -> list[Item]:  # an id without an item was deleted meanwhile
            return [i for p in ids if (i := self._items.get(p) or fetched.get(p)) is not None]

        return join_answer(items(running), items(pending))


def join_answer(running: list[Item], pending: list[Item]) -> bytes:
    """`{"queue_running": [...], "queue_pending": [...]}` from the items, copied once."""
    parts = [b'{"queue_running": [']
    for items, close in ((running, b'], "queue_pending": ['), (pending, b"]}")):
        for n, item in enumerate(items):
            parts += [b", ", *item] if n else item
        parts.append(close)
    return b"".join(parts)
