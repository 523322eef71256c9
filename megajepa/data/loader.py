"""Epochs of packed rows in a deterministic global order, sliced per rank, resumable exactly.

Epoch e shuffles the examples with seed (seed, e), decides each example's JEPA loss dropout with the
same generator, builds units and packs them into rows. Global micro-batch g is rows
[g*W*B, (g+1)*W*B) of the epoch (W ranks, B rows per rank); rank r takes its B-row slice. The state
is (epoch, rows consumed), so a resumed run sees exactly the rows the uninterrupted run would.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from megajepa.data.examples import BadRecordReport, Example, RecordError
from megajepa.packing import LayoutConfig, PackedRow, Specials, Unit, build_unit, collate, place

log = logging.getLogger(__name__)


class PackedEpochs:
    """Examples -> rows for any epoch; validates up front that every kept example fits a row."""

    def __init__(self, examples: list[Example], specials: Specials, layout: LayoutConfig, seq_len: int,
                 seed: int, jepa_dropout: float = 0.0, use_jepa: bool = True, policy: str = "skip",
                 report: BadRecordReport | None = None, unit_builder=build_unit):
        self.specials, self.layout, self.seq_len, self.seed = specials, layout, seq_len, seed
        self.jepa_dropout, self.use_jepa, self.unit_builder = jepa_dropout, use_jepa, unit_builder
        report = report if report is not None else BadRecordReport()
        kept, shortest = [], None
        for ex in examples:
            n = self._unit(ex, use_jepa).n_tokens
            shortest = n if shortest is None else min(shortest, n)
            if n > seq_len:
                reason = f"needs {n} tokens packed, more than data.seq_len={seq_len}"
                if policy == "error":
                    raise RecordError(f"{ex.source}: {reason}")
                report.add(ex.source, "does not fit one row (data.seq_len)")
                continue
            kept.append(ex)
        if not kept:
            raise RecordError(f"data.seq_len={seq_len} is shorter than every example "
                              f"(the shortest needs {shortest} tokens packed); raise data.seq_len")
        self.examples = kept
        self.report = report
        self._cache: tuple[int, list[PackedRow]] | None = None

    def _unit(self, ex: Example, with_jepa: bool) -> Unit:
        return self.unit_builder(ex.views, self.specials, self.layout, with_jepa=with_jepa)

    def rows(self, epoch: int) -> list[PackedRow]:
        if self._cache and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples))
        keep_jepa = rng.random(len(self.examples)) >= self.jepa_dropout
        units = [self._unit(self.examples[i], self.use_jepa and bool(keep_jepa[i])) for i in order]
        rows = place(units, self.seq_len, self.specials)
        self._cache = (epoch, rows)
        return rows


class DistributedRowLoader:
    """Micro-batches of `micro_batch` rows for this rank; state_dict() goes into every checkpoint."""

    def __init__(self, epochs: PackedEpochs, micro_batch: int, rank: int = 0, world_size: int = 1):
        self.epochs, self.micro_batch, self.rank, self.world_size = epochs, micro_batch, rank, world_size
        self.epoch, self.consumed = 0, 0  # rows of the current epoch consumed by all ranks together
        self.dropped_tail = 0

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world_size

    def _usable(self, rows: list[PackedRow]) -> int:
        usable = len(rows) - len(rows) % self.global_batch
        if usable == 0:
            raise RecordError(f"an epoch packs into {len(rows)} rows, fewer than one global micro-batch "
                              f"({self.world_size} ranks x {self.micro_batch} rows): add data or lower "
                              "train.micro_batch_size")
        return usable

    def next_batch(self) -> dict[str, torch.Tensor]:
        rows = self.epochs.rows(self.epoch)
        usable = self._usable(rows)
        if self.consumed >= usable:  # the last partial global batch waits for the next shuffle
            self.dropped_tail = len(rows) - usable
            self.epoch, self.consumed = self.epoch + 1, 0
            rows = self.epochs.rows(self.epoch)
        start = self.consumed + self.rank * self.micro_batch
        batch = collate(rows[start:start + self.micro_batch])
        self.consumed += self.global_batch
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "global_batch": self.global_batch,
                "seed": self.epochs.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.epochs.seed:
            raise ValueError(f"checkpoint data order used seed {state['seed']}, this run {self.epochs.seed}")
        if state["consumed"] % self.global_batch:
            raise ValueError(
                f"cannot resume the data order: the checkpoint consumed {state['consumed']} rows of epoch "
                f"{state['epoch']}, not a multiple of this run's global micro-batch ({self.global_batch} = "
                f"{self.world_size} ranks x {self.micro_batch}); resume with a rank count and micro-batch "
                "size whose product divides it")
        self.epoch, self.consumed = state["epoch"], state["consumed"]
