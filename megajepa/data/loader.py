"""Epochs of packed rows in a deterministic global order, sliced per rank, resumable exactly.

Epoch e shuffles the examples with seed (seed, e), decides each example's JEPA loss dropout by the
rule of data/loss_dropout.py (the shards' rule too), builds units and packs them into rows. Global micro-batch g is rows
[g*W*B, (g+1)*W*B) of the epoch (W ranks, B rows per rank); rank r takes its B-row slice. The state
is (epoch, rows consumed), so a resumed run sees exactly the rows the uninterrupted run would.
Preprocessed shards (shards.ShardRows) are packed once and permuted per epoch instead.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from megajepa.data.collate import collate
from megajepa.data.examples import BadRecordReport, Example, RecordError
from megajepa.data.loss_dropout import keeps_views
from megajepa.data.packing import LayoutConfig, PackedRow, Specials, Unit, build_unit, place
from megajepa.data.stp import StpSampling, add_stp_samples

log = logging.getLogger(__name__)


def make_unit(ex: Example, specials: Specials, layout: LayoutConfig, with_jepa: bool) -> Unit:
    return build_unit(ex.views, specials, layout, with_jepa=with_jepa, prompt=ex.prompt or None,
                      jepa_views=ex.jepa_views or None)


def fits(ex: Example, n_tokens: int, seq_len: int, policy: str, report: BadRecordReport) -> bool:
    """Whether an example's unit fits one row; one that does not is skipped and counted, or raised."""
    if n_tokens <= seq_len:
        return True
    if policy == "error":
        raise RecordError(f"{ex.source}: needs {n_tokens} tokens packed, more than data.seq_len={seq_len}")
    report.add(ex.source, "does not fit one row (data.seq_len)")
    return False


class PackedEpochs:
    """Examples -> rows for any epoch: each example's unit is built (and checked to fit a row) once, up front."""

    def __init__(self, examples: list[Example], specials: Specials, layout: LayoutConfig, seq_len: int,
                 seed: int, jepa_dropout: float = 0.0, use_jepa: bool = True, policy: str = "skip",
                 report: BadRecordReport | None = None, stp: StpSampling | None = None):
        """`stp`: draw STP samples for each batch (data/stp.py), None when stp.lambda is 0."""
        self.specials, self.layout, self.seq_len, self.seed, self.stp = specials, layout, seq_len, seed, stp
        self.jepa_dropout = jepa_dropout
        report = report if report is not None else BadRecordReport()
        kept, units, shortest = [], [], None
        for ex in examples:
            # built once, with its JEPA segments (the longest it can be); an epoch that drops them takes
            # unit.without_jepa(), so packing an epoch only places
            unit = make_unit(ex, specials, layout, use_jepa)
            shortest = unit.n_tokens if shortest is None else min(shortest, unit.n_tokens)
            if fits(ex, unit.n_tokens, seq_len, policy, report):
                kept.append(ex)
                units.append(unit)
        if not kept:
            raise RecordError(f"data.seq_len={seq_len} is shorter than every example "
                              f"(the shortest needs {shortest} tokens packed); raise data.seq_len")
        self.examples, self.units = kept, units
        self.report = report
        self._epochs: dict[int, Future] = {}  # this epoch's rows and the next one's, packed in a thread
        self._packer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack-epoch")
        self._lock = threading.Lock()
        self._epochs[0] = self._packer.submit(self._pack, 0)  # packs while the model is being built

    def rows(self, epoch: int) -> list[PackedRow]:
        """Epoch `epoch`'s rows; epoch + 1 starts packing in the background so the next epoch end does
        not stall training (packing is pure: the thread cannot change what a run sees)."""
        with self._lock:  # the loader's prefetch thread calls this too
            self._epochs = {e: self._epochs.get(e) or self._packer.submit(self._pack, e) for e in (epoch, epoch + 1)}
            future = self._epochs[epoch]
        return future.result()

    def _pack(self, epoch: int) -> list[PackedRow]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples))
        keep_jepa = self.keeps_views(epoch)
        units = [self.units[i] if keep_jepa[i] else self.units[i].without_jepa() for i in order]
        return place(units, self.seq_len, self.specials)

    def keeps_views(self, epoch: int) -> np.ndarray:
        """Per example (in self.examples' order): whether it is packed with its JEPA views in `epoch`."""
        return keeps_views(self.seed, epoch, [ex.record for ex in self.examples], self.jepa_dropout)

    # the loader's row-source interface (shards.ShardRows implements the same)
    def num_rows(self, epoch: int) -> int:
        return len(self.rows(epoch))

    def batch(self, epoch: int, start: int, count: int) -> dict[str, torch.Tensor]:
        rows = self.rows(epoch)[start:start + count]
        batch = collate(rows)
        if self.stp is not None:  # seeded by the rows' place in the epoch, not by which rank reads them
            add_stp_samples(batch, [r.docs for r in rows], epoch, start, self.stp)
        return batch


class DistributedRowLoader:
    """Micro-batches of `micro_batch` rows for this rank; state_dict() goes into every checkpoint.

    `rows`: a row source (PackedEpochs in memory, shards.ShardRows on disk) with `seed`,
    num_rows(epoch) and batch(epoch, start, count). The order is global: it does not depend on the
    number of ranks, so a run resumed on another rank count continues it from the same row.
    """

    def __init__(self, rows, micro_batch: int, rank: int = 0, world_size: int = 1, grad_accum: int = 1):
        """`grad_accum`: micro-batches per optimizer step; an epoch's tail is dropped a whole step at a time,
        so a run resumed with another ranks x accumulation split (the same rows per step) reads the same
        rows at every epoch end too."""
        self.rows, self.micro_batch, self.rank, self.world_size = rows, micro_batch, rank, world_size
        self.grad_accum = grad_accum
        self.epoch, self.consumed = 0, 0  # rows of the current epoch consumed by all ranks together
        # The next micro-batch is read in a thread while this one trains; keyed by its (epoch, start).
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-batch")
        self._pending: tuple[tuple[int, int], Future] | None = None

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world_size

    def _rows_in(self, epoch: int) -> int:
        n = self.rows.num_rows(epoch)
        if n < self.global_batch:
            raise RecordError(f"an epoch packs into {n} rows, fewer than one global micro-batch "
                              f"({self.world_size} ranks x {self.micro_batch} rows): add data or lower "
                              "train.micro_batch_size")
        return n

    def _epoch_ends_at(self, consumed: int, n: int) -> bool:
        """Whether the next micro-batch starts the next epoch: at a step's start, when the epoch has no room
        for a whole step (the last partial step waits for the next shuffle); inside a step (only after a
        resume that changed the rows per step), when it has no room for one global micro-batch."""
        step_rows = self.global_batch * self.grad_accum
        return consumed + (step_rows if consumed % step_rows == 0 else self.global_batch) > n

    def next_batch(self) -> dict[str, torch.Tensor]:
        n = self._rows_in(self.epoch)
        if self._epoch_ends_at(self.consumed, n):
            self.epoch, self.consumed = self.epoch + 1, 0
            self._rows_in(self.epoch)
        key = (self.epoch, self.consumed + self.rank * self.micro_batch)
        pending, self._pending = self._pending, None
        batch = pending[1].result() if pending and pending[0] == key else self.rows.batch(*key, self.micro_batch)
        self.consumed += self.global_batch
        # Where the next global batch starts if this epoch has room for it, else epoch + 1 from row 0.
        ends = self._epoch_ends_at(self.consumed, self.rows.num_rows(self.epoch))
        after = (self.epoch + 1, 0) if ends else (self.epoch, self.consumed)
        nxt = (after[0], after[1] + self.rank * self.micro_batch)
        self._pending = (nxt, self._prefetcher.submit(self.rows.batch, *nxt, self.micro_batch))
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "global_batch": self.global_batch,
                "seed": self.rows.seed, "rows_in_epoch": self.rows.num_rows(self.epoch)}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.rows.seed:
            raise ValueError(f"cannot resume the data order: the checkpoint used seed {state['seed']}, "
                             f"this run {self.rows.seed}")
        rows = self.rows.num_rows(state["epoch"])
        if state.get("rows_in_epoch", rows) != rows:
            raise ValueError(f"cannot resume the data order: epoch {state['epoch']} had {state['rows_in_epoch']} "
                             f"rows in the checkpointed run and has {rows} now (different data, tokenizer or "
                             "packing config); resume with the same data or start a fresh run")
        if state["global_batch"] != self.global_batch:
            log.info("resuming the data order at row %d of epoch %d with a global micro-batch of %d rows "
                     "(was %d): the global order continues unchanged", state["consumed"], state["epoch"],
                     self.global_batch, state["global_batch"])
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self._pending = None
