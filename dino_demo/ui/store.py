"""The results the page re-draws from, kept in one app-wide store with a memory budget.

Each Detect stores one `explore.stored.StoredResult` (the inference result in compact form, its
drawing canvas, the uploaded file's name). Sessions hold only the key. When the stored results
together exceed the budget, the least recently used are dropped, whichever session they belong
to; a session whose result was dropped is told to press Detect again (`ResultExpired`).

A stored result holds the drawing canvas, the sampling locations and weights, the per-layer
logits, the encoder memory in float16 and the encoder's input in float32 (the Encoder view
recomputes any token's attention from it, see `explore.encoder`); what each takes for an official
R50 is in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

from ..explore.stored import StoredResult
from .memory import release_freed_memory


class ResultExpired(ValueError):
    """The session's result is no longer stored (dropped to stay within the memory budget)."""


class ResultStore:
    """Thread-safe LRU of StoredResults by key, dropping the least recently used beyond
    `budget_bytes` (the newest entry is always kept, even if it alone is larger)."""

    def __init__(self, budget_bytes: int):
        if budget_bytes < 1:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, tuple[StoredResult, int]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, stored: StoredResult, key: str | None = None) -> str:
        """Store `stored` under `key` (a new random key by default) and return the key."""
        key = key or uuid.uuid4().hex
        size = stored.nbytes
        dropped = []
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (stored, size)
            total = sum(n for _, n in self._entries.values())
            while total > self.budget_bytes and len(self._entries) > 1:
                dropped.append(self._entries.popitem(last=False))
                total -= dropped[-1][1][1]
        if dropped:
            dropped.clear()
            release_freed_memory()
        return key

    def get(self, key: str | None) -> StoredResult:
        """The entry under `key`; ResultExpired when there is none (any more)."""
        with self._lock:
            entry = self._entries.get(key) if key else None
            if entry is None:
                raise ResultExpired("No detection result in this session (it may have expired to free memory): "
                                    "press Detect (or call /detect) again.")
            self._entries.move_to_end(key)
            return entry[0]

    def peek(self, key: str | None) -> StoredResult | None:
        """The entry under `key` or None, without refreshing it."""
        with self._lock:
            entry = self._entries.get(key) if key else None
            return entry[0] if entry else None

    def discard(self, key: str | None) -> None:
        with self._lock:
            self._entries.pop(key, None)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(n for _, n in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
