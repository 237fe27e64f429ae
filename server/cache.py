"""Output cache keyed by node signatures, bounded by a RAM budget with LRU eviction.

A signature is a digest of the node's class_type, its constant inputs and the signatures of the
nodes that feed it, so two workflows that share a sub-graph share its cached outputs, and a
changed widget invalidates exactly that node and its descendants.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


def signature(
    class_type: str, constants: dict[str, Any], upstream: dict[str, tuple[str, int]], fingerprint: str = ""
) -> str:
    """Digest of what determines a node's outputs. `upstream` maps input name to
    (signature of the source node, output slot). repr() tells 1 from 1.0 from True, which a
    plain hash() would not. (Joining short strings measured faster than repr of one tuple.)"""
    parts = [class_type, fingerprint]
    for name in sorted(constants):
        parts.append(f"{name}={constants[name]!r}")
    for name in sorted(upstream):
        sig, slot = upstream[name]
        parts.append(f"{name}<{sig}:{slot}")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def estimate_size(value: Any, _depth: int = 0) -> int:
    """Bytes a cached value keeps alive: tensors by their storage, containers by their items.
    Model handles report a small size: their weights belong to the model manager."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    size_fn = getattr(value, "cache_size", None)
    if callable(size_fn):
        return int(size_fn())
    if _depth > 4:
        return sys.getsizeof(value)
    if isinstance(value, dict):
        return sum(estimate_size(v, _depth + 1) for v in value.values()) + 64
    if isinstance(value, list | tuple):
        return sum(estimate_size(v, _depth + 1) for v in value) + 56
    return sys.getsizeof(value)


@dataclass
class CacheEntry:
    outputs: tuple
    ui: dict[str, Any] | None
    size: int


class OutputCache:
    """LRU cache of node outputs. `budget_bytes` bounds the estimated size of what it holds;
    an entry larger than the whole budget is not kept at all."""

    def __init__(self, budget_bytes: int = 4 * 2**30) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, sig: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(sig)
            if entry is not None:
                self._entries.move_to_end(sig)
            return entry

    def put(self, sig: str, outputs: tuple, ui: dict[str, Any] | None = None) -> None:
        size = estimate_size(outputs) + (estimate_size(ui) if ui else 0)
        with self._lock:
            old = self._entries.pop(sig, None)
            if old is not None:
                self._used -= old.size
            if size > self.budget_bytes:
                return
            self._entries[sig] = CacheEntry(outputs, ui, size)
            self._used += size
            while self._used > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._used -= evicted.size
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._used = 0

    @property
    def used_bytes(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sig: str) -> bool:
        return sig in self._entries
