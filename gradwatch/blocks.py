"""Which elements of a large weight its update is measured on.

A weight of up to ``LARGE_PARAM`` elements is measured whole. A larger one is
measured on every k-th block of ``BLOCK`` contiguous elements (one cache line
of float32), k a prime keeping ``numel / UPDATE_SUBSAMPLE`` elements (at least
``MIN_SUBSET``) whose blocks fall at shifting places along the rows: an
unbiased estimate of ``|ΔW|²`` (about 1% error on ``|ΔW|``) that copies and
reads a fraction of the weight instead of all of it.
"""

from __future__ import annotations

import math

LARGE_PARAM, UPDATE_SUBSAMPLE, MIN_SUBSET, BLOCK = 1 << 16, 64, 1 << 14, 16
CACHE_CHUNK = 1 << 18  # elements of small tensors copied together and read again at once, while still in cache
SPREAD_UNITS = 4  # units read whole to tell whether a layer's units are copies of each other (random ones never are)


def update_stride(numel: int, row: int) -> int:
    """Every how many blocks a weight of ``numel`` elements in rows of ``row`` is sampled (1: all of it)."""
    if numel <= LARGE_PARAM:
        return 1
    for stride in range(numel // max(numel // UPDATE_SUBSAMPLE, MIN_SUBSET), 1, -1):
        if (stride * BLOCK) % max(row, 1) and all(stride % k for k in range(2, math.isqrt(stride) + 1)):
            return stride
    return 1


def sampled_elements(numel: int, stride: int) -> int:
    """How many elements that sampling keeps (a tail shorter than a block is left out)."""
    return numel if stride == 1 else -(-(numel // BLOCK) // stride) * BLOCK
