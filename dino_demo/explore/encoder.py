"""Encoder tokens of a result: which token holds a pixel, its cell, and a cache of the tokens'
recomputed attention.

Every encoder token is a query of the encoder's self-attention; a stored result keeps only what
recomputing it needs, and `Detector.token_attention` recomputes one token's attention on demand
(DINO: `runtime.dino_encoder`; a family: `families.inference`). The helpers here read a result's
feature grid: `token_at(result, level, x, y)` gives the token whose cell holds image pixel (x, y).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

from ..runtime.result import EncoderToken, InferenceResult, TokenAttention

__all__ = ["EncoderToken", "TokenAttention", "TokenAttentionCache", "cell_box", "level_grid", "token", "token_at"]


def level_grid(result: InferenceResult, level: int) -> tuple[int, int, int, int]:
    """(rows, cols) of level `level`'s padded grid and (rows, cols) of it that hold the image."""
    out = result.internals
    levels = int(out.spatial_shapes.shape[0])
    if isinstance(level, bool) or int(level) != level or not 0 <= level < levels:
        raise ValueError(f"level must be an integer in 0..{levels - 1}, got {level}")
    h, w = (int(v) for v in out.spatial_shapes[level])
    start = int(out.level_start_index[level])
    mask = out.padding_mask[0, start:start + h * w].view(h, w)
    return h, w, int((~mask[:, 0]).sum()), int((~mask[0, :]).sum())


def token_at(result: InferenceResult, level: int, x: float, y: float) -> EncoderToken:
    """The token of feature level `level` whose cell holds image pixel (x, y) (the nearest cell
    of the image's part of the grid when (x, y) lies outside the image)."""
    rows, cols, valid_rows, valid_cols = level_grid(result, level)
    (pad_h, pad_w), (in_h, in_w), (img_h, img_w) = result.padded_size, result.input_size, result.size
    col = int(float(x) * in_w / img_w / pad_w * cols)
    row = int(float(y) * in_h / img_h / pad_h * rows)
    return token(result, level, min(max(row, 0), valid_rows - 1), min(max(col, 0), valid_cols - 1))


def token(result: InferenceResult, level: int, row: int, col: int) -> EncoderToken:
    """The token at (row, col) of level `level`; ValueError outside the image's part of the grid."""
    _, w, valid_rows, valid_cols = level_grid(result, level)
    for name, value, count in (("row", row, valid_rows), ("column", col, valid_cols)):
        if isinstance(value, bool) or int(value) != value or not 0 <= value < count:
            raise ValueError(f"token {name} must be an integer in 0..{count - 1} on level {level + 1}, got {value}")
    start = int(result.internals.level_start_index[level])
    return EncoderToken(index=start + int(row) * w + int(col), level=int(level), cell=(int(row), int(col)))


def cell_box(result: InferenceResult, token: EncoderToken) -> list[float]:
    """[4] xyxy in original pixels of the token's cell."""
    rows, cols = (int(v) for v in result.internals.spatial_shapes[token.level])
    (pad_h, pad_w), (in_h, in_w), (img_h, img_w) = result.padded_size, result.input_size, result.size
    sx, sy = pad_w * img_w / in_w / cols, pad_h * img_h / in_h / rows
    row, col = token.cell
    return [col * sx, row * sy, (col + 1) * sx, (row + 1) * sy]


class TokenAttentionCache:
    """Recomputed token attention by (result, token index): at most `per_result` tokens per
    result, least recently used dropped first; a result's entries go when the result does (weak
    keys), so the cache never keeps a dropped result alive. Thread-safe."""

    def __init__(self, per_result: int = 64):
        if per_result < 1:
            raise ValueError(f"per_result must be positive, got {per_result}")
        self.per_result = per_result
        self._entries: weakref.WeakKeyDictionary[InferenceResult, OrderedDict[int, TokenAttention]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many results have tokens cached."""
        with self._lock:
            return len(self._entries)

    def get(self, result: InferenceResult, token: EncoderToken,
            compute: Callable[[], TokenAttention]) -> TokenAttention:
        """The cached attention of `token` in `result`, else `compute()` (outside the lock), cached."""
        with self._lock:
            tokens = self._entries.get(result)
            if tokens is not None and token.index in tokens:
                tokens.move_to_end(token.index)
                return tokens[token.index]
        attention = compute()
        with self._lock:
            tokens = self._entries.setdefault(result, OrderedDict())
            tokens[token.index] = attention
            while len(tokens) > self.per_result:
                tokens.popitem(last=False)
        return attention
