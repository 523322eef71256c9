"""Records -> packed rows in a process pool. Each worker takes a chunk of records and does everything
up to the on-disk arrays: tokenize, draw JEPA loss dropout (data/loss_dropout.py: the in-memory path's
rule for epoch 0, by each record's place in the stream), build the units,
check they fit, place them first-fit into rows (packing.place), convert to arrays. Results come back
in chunk order, so the output never depends on the number of workers; only numpy arrays cross
processes. A chunk's last rows may be less full than one global placement would make them: chunks
of a few thousand records keep that to a fraction of a percent (the summary reports the fill)."""
from __future__ import annotations

import itertools
import multiprocessing as mp


from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.loader import fits, make_unit
from megajepa.data.loss_dropout import keeps_views
from megajepa.data.packing import place
from megajepa.data.shards import rows_to_arrays
from megajepa.data.tokenizer import load_tokenizer

_worker: dict = {}


def _init_worker(tokenizer_path: str, options: dict) -> None:
    _worker["tokenizer"] = load_tokenizer(tokenizer_path)  # sentencepiece file or transformers directory
    _worker["options"] = options


def chunk_units(index: int, chunk: list, tokenizer, o: dict, report: BadRecordReport) -> list:
    """The packing units of one chunk of (source, record) pairs, in order; chunk `index` starts at record
    index * o["chunk_records"] of the stream."""
    examples = tokenize_records(chunk, tokenizer, o["policy"], report,
                                with_prompt=o["system_prompt"], extra_fields=o["extra_fields"],
                                view_specs=o["view_specs"], first_record=index * o["chunk_records"])
    keep = keeps_views(o["seed"], 0, [ex.record for ex in examples], o["dropout"])  # packed once: epoch 0
    units = []
    for ex, with_jepa in zip(examples, keep):
        unit = make_unit(ex, o["specials"], o["layout"], o["use_jepa"] and bool(with_jepa))
        if fits(ex, unit.n_tokens, o["seq_len"], o["policy"], report):
            units.append(unit)
    return units


def _rows(task: tuple[int, list]):
    index, chunk = task
    o, report = _worker["options"], BadRecordReport()
    units = chunk_units(index, chunk, _worker["tokenizer"], o, report)
    arrays = rows_to_arrays(place(units, o["seq_len"], o["specials"])) if units else None
    return arrays, report, {"records": len(chunk), "examples": len(units),
                            "jepa_examples": sum(1 for u in units if u.pairs)}


def chunks(items, size: int):
    """(index, list of up to `size` items) in order."""
    it = iter(items)
    return enumerate(iter(lambda: list(itertools.islice(it, size)), []))


class RowPool:
    """`with RowPool(n, tokenizer_path, options) as rows: rows(chunks)` yields (arrays or None,
    BadRecordReport, counts) per chunk; n = 1 works in this process."""

    def __init__(self, workers: int, tokenizer_path: str, options: dict):
        self.workers, self.args = workers, (tokenizer_path, options)
        self.pool = None

    def __enter__(self):
        if self.workers > 1:  # fork where there is one: workers start at once, torch already imported
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.pool = mp.get_context(method).Pool(self.workers, _init_worker, self.args)
            return lambda tasks: self.pool.imap(_rows, tasks)
        _init_worker(*self.args)
        return lambda tasks: map(_rows, tasks)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()
