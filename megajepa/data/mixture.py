"""A weighted mixture of sources as one deterministic stream of (source, record) pairs.

Each next record comes from source i with probability weight_i / sum(weights), drawn from a generator
seeded by the run seed (so the mixture is the same on every rank and every run). Stopping follows
`datasets.interleave_datasets`: `first_exhausted` ends when any source runs out (no record repeats);
`all_exhausted` restarts exhausted sources until every source has been read once (small sources
are oversampled to keep the weights).
"""
from __future__ import annotations

import numpy as np

from megajepa.config import MixtureStop
from megajepa.data.examples import RecordError
from megajepa.data.sources import Source

_BLOCK = 4096  # source choices drawn per rng call


def mixture(specs: list, seed: int, stopping: MixtureStop = "first_exhausted"):
    sources = [Source.parse(s) for s in specs]
    for source in sources:
        source.files()  # a source that matches nothing fails before any record is read
    if len(sources) == 1:
        yield from sources[0]
        return
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    p = weights / weights.sum()
    rng = np.random.default_rng([seed, 0x6D6978])  # "mix": independent of the epoch shuffles
    streams = [iter(s) for s in sources]
    finished = [False] * len(sources)
    while True:
        for i in rng.choice(len(sources), size=_BLOCK, p=p):
            try:
                yield next(streams[i])
            except StopIteration:
                finished[i] = True
                if stopping == "first_exhausted" or all(finished):
                    return
                streams[i] = iter(sources[i])  # oversample: read this source again
                first = next(streams[i], None)
                if first is None:
                    raise RecordError(f"data source {sources[i].path!r} holds no records")
                yield first
