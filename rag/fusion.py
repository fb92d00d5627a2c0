"""Reciprocal rank fusion (RRF) of ranked lists, and cosine ranking over unit vectors in pure Python.

RRF scores an item ``sum(1 / (k + rank))`` over the lists it appears in (ranks start at 1), so an item
ranked well by both BM25 and the vectors beats one ranked first by only one of them, and the two
lists' raw scores (BM25 and cosine, not comparable) are never mixed.
"""

from __future__ import annotations

import heapq
import math
import operator
from array import array
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

__all__ = ["DEFAULT_RRF_K", "normalize", "rrf", "top_by_cosine"]

DEFAULT_RRF_K = 60
"""The usual RRF constant: larger values flatten the difference between the first ranks."""

K = TypeVar("K", bound=Hashable)


def rrf(rankings: Iterable[Sequence[K]], *, k: int = DEFAULT_RRF_K) -> list[tuple[K, float]]:
    """Fuse ranked lists (best first) into one: ``(item, score)`` pairs, best first.

    Ties keep the order of first appearance (the first list's order wins), so fusion is deterministic.
    """
    if k < 0:
        raise ValueError(f"k: expected a non-negative integer, got {k!r}")
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))


def normalize(vector: Sequence[float]) -> array[float]:
    """``vector`` scaled to unit length as float32 (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return array("f", (x / norm for x in vector) if norm > 0 else vector)


def top_by_cosine(query: Sequence[float], vectors: Iterable[tuple[K, Sequence[float]]], n: int) -> list[K]:
    """The ``n`` keys whose vectors are closest to ``query`` by cosine, best first.

    All vectors (``query`` included) must already be unit length, so the dot product is the cosine.
    """
    mul = operator.mul
    scored = ((sum(map(mul, query, vec)), key) for key, vec in vectors)
    return [key for _, key in heapq.nlargest(n, scored, key=operator.itemgetter(0))]
