"""Tokenize record chunks in a process pool, results in input order (so output never depends on the
number of workers). Imports nothing heavy: spawned workers start in well under a second."""
from __future__ import annotations

import itertools
import multiprocessing as mp

from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.tokenizer import Tokenizer

_worker: dict = {}


def _init_worker(tokenizer_path: str, options: dict) -> None:
    _worker["tokenizer"] = Tokenizer.load(tokenizer_path)
    _worker["options"] = options


def _tokenize_chunk(chunk: list):
    report = BadRecordReport()
    o = _worker["options"]
    examples = tokenize_records(chunk, _worker["tokenizer"], 1, o["policy"], report,
                                with_prompt=o["system_prompt"], extra_fields=o["extra_fields"])
    return examples, report, len(chunk)


def chunks(items, size: int):
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class TokenizePool:
    """`with TokenizePool(n, tokenizer_path, options) as tokenize: tokenize(chunks)` yields
    (examples, BadRecordReport, records in chunk) per chunk; n = 1 tokenizes in this process."""

    def __init__(self, workers: int, tokenizer_path: str, options: dict):
        self.workers, self.args = workers, (tokenizer_path, options)
        self.pool = None

    def __enter__(self):
        if self.workers > 1:  # spawn: no fork of a process that may hold torch threads
            self.pool = mp.get_context("spawn").Pool(self.workers, _init_worker, self.args)
            return lambda items: self.pool.imap(_tokenize_chunk, items)
        _init_worker(*self.args)
        return lambda items: map(_tokenize_chunk, items)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()
