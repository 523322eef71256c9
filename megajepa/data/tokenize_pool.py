"""Records -> packing units in a process pool (tokenize, decide JEPA loss dropout, build the unit,
check it fits a row), results in input order. Each chunk's dropout draws come from a generator seeded
by (seed, chunk index), so the output never depends on the number of workers."""
from __future__ import annotations

import itertools
import multiprocessing as mp

import numpy as np

from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.loader import fits, make_unit
from megajepa.tokenizer import Tokenizer

DROPOUT_STREAM = 0x64726F70  # "drop": keeps these draws apart from every other use of the seed
_worker: dict = {}


def _init_worker(tokenizer_path: str, options: dict) -> None:
    _worker["tokenizer"] = Tokenizer.load(tokenizer_path)
    _worker["options"] = options


def _units(task: tuple[int, list]):
    index, chunk = task
    o, report = _worker["options"], BadRecordReport()
    examples = tokenize_records(chunk, _worker["tokenizer"], 1, o["policy"], report,
                                with_prompt=o["system_prompt"], extra_fields=o["extra_fields"])
    keep = np.random.default_rng([o["seed"], DROPOUT_STREAM, index]).random(len(examples)) >= o["dropout"]
    units = []
    for ex, with_jepa in zip(examples, keep):
        unit = make_unit(ex, o["specials"], o["layout"], o["use_jepa"] and bool(with_jepa))
        if fits(ex, unit.n_tokens, o["seq_len"], o["policy"], report):
            units.append(unit)
    return units, report, len(chunk)


def chunks(items, size: int):
    """(index, list of up to `size` items) in order."""
    it = iter(items)
    return enumerate(iter(lambda: list(itertools.islice(it, size)), []))


class UnitPool:
    """`with UnitPool(n, tokenizer_path, options) as units: units(chunks)` yields (units, BadRecordReport,
    records in chunk) per chunk; n = 1 works in this process."""

    def __init__(self, workers: int, tokenizer_path: str, options: dict):
        self.workers, self.args = workers, (tokenizer_path, options)
        self.pool = None

    def __enter__(self):
        if self.workers > 1:  # fork where there is one: workers start at once, torch already imported
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.pool = mp.get_context(method).Pool(self.workers, _init_worker, self.args)
            return lambda tasks: self.pool.imap(_units, tasks)
        _init_worker(*self.args)
        return lambda tasks: map(_units, tasks)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()
