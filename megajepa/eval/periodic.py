"""Evaluation inside training (eval.interval): greedy generation on a fixed set, scored, every rank
taking a shard. Under ZeRO-3 every forward is collective, so all ranks run the same number of batches
and decode steps (a rank that is done feeds padding until all are)."""
from __future__ import annotations

import json
import logging
import os

import torch
import torch.distributed as dist

from megajepa.eval.generate import (
    InputError,
    items_from_records,
    parse_metrics,
    predict,
    prediction_rows,
    read_items,
    score_rows,
)

log = logging.getLogger("megajepa")


def eval_items(cfg, rank: int = 0) -> tuple[list, str]:
    """eval.file, else the synthetic task's held-out split when the run trains on the synthetic corpus
    (its side files, the sql task's databases, written by rank 0 under output_dir/eval_data for scoring)."""
    n = cfg.eval.max_examples or None
    if cfg.eval.file:
        try:
            items = read_items(cfg.eval.file, n)
        except InputError as e:
            raise InputError(f"eval.file: {e}") from None
        return items, os.path.dirname(os.path.abspath(cfg.eval.file))
    if cfg.data.sources:
        raise InputError("eval.interval > 0 needs eval.file when training on data.sources")
    from megajepa.data.synthetic import split
    side_files = os.path.join(cfg.output_dir, "eval_data")
    _, test = split(cfg.data.task, cfg.data.num_train, cfg.data.num_test, cfg.seed,
                    out_dir=side_files if rank == 0 else None)
    return items_from_records(test[:n], f"synthetic-{cfg.data.task}-test"), side_files


class PeriodicEval:
    def __init__(self, cfg, tokenizer, rank: int, world: int):
        self.cfg, self.tokenizer, self.rank, self.world = cfg, tokenizer, rank, world
        for key, value in (("eval.interval", cfg.eval.interval), ("eval.max_new_tokens", cfg.eval.max_new_tokens)):
            if value < 1:  # checked here, before training, not at the first evaluation hours in
                raise InputError(f"config key '{key}' must be >= 1 when evaluating, got {value}")
        self.metrics = parse_metrics(cfg.eval.metric, "config key 'eval.metric'")
        self.items, self.base_dir = eval_items(cfg, rank)
        per_rank = -(-len(self.items) // world)
        # Equal shards: the last ranks repeat item 0 as filler (dropped after gathering).
        padded = self.items + [self.items[0]] * (per_rank * world - len(self.items))
        self.shard = padded[rank::world]

    def _all_done(self, local_done: bool) -> bool:
        if self.world == 1:
            return local_done
        flag = torch.tensor([0.0 if local_done else 1.0], device=self.device)
        dist.all_reduce(flag)
        return flag.item() == 0

    def run(self, model, step: int) -> dict[str, float] | None:
        """Scalars for the logger on rank 0 (None elsewhere); predictions written next to the run."""
        self.device = next(model.parameters()).device  # where the collective's flag must live (nccl: cuda)
        predictions = predict(model, self.tokenizer, self.shard, self.cfg.eval.max_new_tokens, batch_size=32,
                              with_system=self.cfg.data.system_prompt, all_done=self._all_done)
        if self.world > 1:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, predictions)
            predictions = [None] * (len(self.shard) * self.world)
            for r, preds in enumerate(gathered):
                predictions[r::self.world] = preds
        if self.rank != 0:
            return None
        rows = prediction_rows(self.items, predictions[:len(self.items)])
        results = score_rows(rows, self.metrics, self.base_dir)
        out_dir = os.path.join(self.cfg.output_dir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"step_{step:08d}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        return {f"eval/{m}": r["accuracy"] for m, r in results.items()}
