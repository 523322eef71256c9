"""Shared sampling helpers: unique draws and leak-free train/test splits for every task."""
from __future__ import annotations

import random
from typing import Callable, Iterable

Record = dict
Sampler = Callable[[random.Random], Record]


def default_keys(record: Record) -> Iterable[str]:
    # Every view is a key: a test view seen in train (in any role) would leak the answer.
    return record["views"]


def unique_records(sample: Sampler, n: int, seed: int, keys=default_keys,
                   banned: set | None = None, tries_per_record: int = 50) -> list[Record]:
    """Draw `n` records from `sample` with no key shared between any two records.

    Deterministic in `seed`; raises when the grammar cannot yield `n` distinct records,
    so a too-small space fails loudly instead of silently repeating examples.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen = set(banned or ())
    out: list[Record] = []
    budget = max(1000, tries_per_record * n)
    while len(out) < n:
        if budget == 0:
            raise ValueError(f"only {len(out)} distinct records found, {n} requested; "
                             "the grammar space is too small for this n")
        budget -= 1
        rec = sample(rng)
        ks = list(keys(rec))
        if any(k in seen for k in ks):
            continue
        seen.update(ks)
        out.append(rec)
    return out


def split(sample: Sampler, n_train: int, n_test: int, seed: int, keys=default_keys):
    """Test first, then train drawn with every test key banned, so no key is shared."""
    test = unique_records(sample, n_test, seed * 2 + 1, keys)
    banned = {k for r in test for k in keys(r)}
    train = unique_records(sample, n_train, seed * 2, keys, banned=banned)
    return train, test
