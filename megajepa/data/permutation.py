"""A seeded shuffle of range(n) evaluated per index, in O(1) memory whatever n is.

`np.random.permutation(n)` holds 8 bytes per row on every rank (800 MB at 1e8 rows, per epoch held).
Here position i of the epoch maps to row `FeistelShuffle(n, seed)[i]`: a 6-round Feistel network over
the smallest even-bit domain >= n, with cycle-walking for the values that fall outside range(n). Any
keyed Feistel network is a bijection of its domain, and cycle-walking keeps it one on range(n), so
every row appears exactly once per epoch; the order depends only on (seed, epoch, n), not on the rank
count, and a resumed loader recomputes the same indices.
"""
from __future__ import annotations

import numpy as np

ROUNDS = 6
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-mixed 64-bit hash (uint64 arithmetic wraps)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class FeistelShuffle:
    def __init__(self, n: int, seed) -> None:
        if n < 1:
            raise ValueError(f"cannot shuffle {n} rows")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = np.uint64((bits + 1) // 2)  # an even-bit domain of 2 ** (2 * half) >= n values
        self.mask = np.uint64((1 << int(self.half)) - 1)
        self.keys = np.random.default_rng(seed).integers(0, 2**64, size=ROUNDS, dtype=np.uint64, endpoint=False)

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << self.half) | right

    def take(self, positions) -> np.ndarray:
        """Rows at these epoch positions (each in range(n))."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= self.n):
            raise IndexError(f"positions must lie in [0, {self.n})")
        x = self._round_trip(pos.astype(np.uint64))
        outside = x >= self.n
        while outside.any():  # cycle-walking: at most a few rounds, since the domain is < 4n
            x[outside] = self._round_trip(x[outside])
            outside = x >= self.n
        return x.astype(np.int64)

    def __getitem__(self, window: slice) -> np.ndarray:
        return self.take(np.arange(*window.indices(self.n)))
