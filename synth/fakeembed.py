"""Deterministic fake embeddings: texts sharing words are close (offline ``sim`` provider, simulator)."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from functools import lru_cache

_TOKEN = re.compile(r"\w+")


_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were will with".split()
)


@lru_cache(maxsize=65536)
def _token_slot(token: str, dim: int) -> tuple[int, float]:
    # feature hashing: one signed slot per word, so shared words give shared directions
    a, b = struct.unpack_from("<QB", hashlib.blake2b(token.encode(), digest_size=9).digest())
    return a % dim, 1.0 if b & 1 else -1.0


def fake_embedding(text: str, dim: int = 64) -> list[float]:
    """A deterministic, L2-normalised vector; texts sharing words are closer (feature hashing of
    lowercase word tokens, stopwords skipped, plus a small text-seeded noise)."""
    if dim < 1:
        raise ValueError("embedding dimension must be >= 1")
    vec = [0.0] * dim
    for tok in _TOKEN.findall(text.lower()):
        if tok not in _STOPWORDS:
            i, w = _token_slot(tok, dim)
            vec[i] += w
    # noise keeps distinct texts distinct and gives empty text a direction
    raw = hashlib.shake_128(text.encode("utf-8", "surrogatepass")).digest(2 * dim)
    scale = 0.1 * max(1.0, math.sqrt(sum(v * v for v in vec))) / 65535.0
    vec = [v + (u - 32767.5) * scale for v, u in zip(vec, struct.unpack(f"<{dim}H", raw))]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


__all__ = ["fake_embedding"]
