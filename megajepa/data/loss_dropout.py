"""JEPA loss dropout (`jepa.dropout`, renormalize weighting), one rule for both data paths: the example
read from record r of the training stream keeps its JEPA views in epoch e iff U(seed, e, r) >= dropout.
U comes in blocks of BLOCK records, each block its own generator, so a chunk of records (shards, packed
once as epoch 0) and the whole corpus (in memory, every epoch) draw the same number for a record."""
from __future__ import annotations

import numpy as np

DROPOUT_STREAM = 0x64726F70  # "drop": keeps these draws apart from every other use of the seed
BLOCK = 4096


def keeps_views(seed: int, epoch: int, records: np.ndarray | list[int], dropout: float) -> np.ndarray:
    """Bool per record index in `records`: whether that example keeps its views in `epoch`."""
    records = np.asarray(records, dtype=np.int64)
    if dropout <= 0:
        return np.ones(len(records), dtype=bool)
    draws = np.empty(len(records))
    blocks = records // BLOCK
    for block in np.unique(blocks):
        here = blocks == block
        u = np.random.default_rng([seed, DROPOUT_STREAM, epoch, int(block)]).random(BLOCK)
        draws[here] = u[records[here] % BLOCK]
    return draws >= dropout
