"""The training loop: build everything from a RunConfig, then per step: train_step, log, save."""
from __future__ import annotations

import logging
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist

from megajepa import checkpoint, distributed
from megajepa.config import RunConfig
from megajepa.data import corpus
from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.loader import DistributedRowLoader, PackedEpochs
from megajepa.engine import build_engine, build_model, resolve_ds_config
from megajepa.metrics_log import MetricsLogger
from megajepa.model import describe, resolve_model_config
from megajepa.objective import HybridObjective
from megajepa.packing import IGNORE, LayoutConfig, Specials
from megajepa.tokenizer import Tokenizer, load_or_train

log = logging.getLogger("megajepa")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: RunConfig, dist_info: distributed.DistInfo):
        self.cfg, self.dist = cfg, dist_info
        self.rank, self.world = dist_info.rank, dist_info.world_size
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        seed_everything(cfg.seed)  # same on every rank: identical init whatever the world size
        ds = resolve_ds_config(cfg, self.world)  # config errors before any data or model work

        report = BadRecordReport()
        records = corpus.train_records(cfg, report)
        self.tokenizer = self._tokenizer(records)
        min_views = 2 if cfg.jepa.lam > 0 else 1
        examples = tokenize_records(records, self.tokenizer, min_views, cfg.data.on_bad_record, report,
                                    with_prompt=cfg.data.system_prompt)
        self.specials = Specials.from_tokenizer(self.tokenizer)
        self.epochs = PackedEpochs(examples, self.specials, LayoutConfig.from_run(cfg), cfg.data.seq_len, cfg.seed,
                                   cfg.jepa.dropout, cfg.jepa.lam > 0, cfg.data.on_bad_record, report)
        if report.total:
            log.warning("skipped %d bad record(s) %s; first: %s", report.total, report.counts, report.first[:5])
        self.loader = DistributedRowLoader(self.epochs, cfg.train.micro_batch_size, self.rank, self.world)

        self.model_cfg = resolve_model_config(cfg.model, self.tokenizer.vocab_size)
        if self.rank == 0:
            log.info(describe(self.model_cfg))
        model = build_model(self.model_cfg, ds)
        model.activation_checkpointing = cfg.train.activation_checkpointing
        self.objective = HybridObjective(model, cfg.jepa)
        self.engine, self.scheduler = build_engine(self.objective, ds, cfg.train.weight_decay)
        self.logger = MetricsLogger(cfg.output_dir, enabled=self.rank == 0)
        self.step = 0
        self._maybe_resume()

    def _tokenizer(self, records) -> Tokenizer:
        if self.cfg.data.tokenizer:
            return Tokenizer.load(self.cfg.data.tokenizer)
        cache = os.path.join(self.cfg.output_dir, "tokenizer")
        if self.rank == 0:  # one rank trains, the others read the file it wrote
            os.makedirs(cache, exist_ok=True)
            load_or_train(cache, lambda: corpus.record_texts(records), self.cfg.data.vocab_size,
                          seed=self.cfg.seed)
        distributed.barrier()
        return Tokenizer.load(os.path.join(cache, "tokenizer.model"))

    # ------------------------------------------------------------------ checkpoints
    def _maybe_resume(self) -> None:
        if self.cfg.resume == "none":
            return
        if self.cfg.resume == "auto":
            tag = checkpoint.latest_tag(self.cfg.output_dir)
            if tag is None:
                log.info("resume=auto: no checkpoint in %s, starting fresh", self.cfg.output_dir)
                return
            root = checkpoint.checkpoint_dir(self.cfg.output_dir)
        else:
            root, tag = os.path.split(os.path.abspath(self.cfg.resume))
        state = checkpoint.load(self.engine, root, tag, self.rank)
        self.step = state["step"]
        self.loader.load_state_dict(state["data"])
        log.info("resumed from %s at step %d", os.path.join(root, tag), self.step)

    def save(self) -> None:
        state = {"step": self.step, "data": self.loader.state_dict(), "config": self.cfg.to_dict(),
                 "model_config": self.model_cfg.__dict__, "tokenizer": self.tokenizer.path}
        path = checkpoint.save(self.engine, self.cfg.output_dir, self.step, state, self.rank)
        log.info("saved checkpoint %s", path)

    # ------------------------------------------------------------------ the step
    def _global_counts(self, batches) -> torch.Tensor:
        """Labelled tokens and JEPA pairs over the whole step on every rank (one all-reduce)."""
        counts = torch.tensor([sum(float((b["labels"] != IGNORE).sum()) for b in batches),
                               sum(float(b["pair_mask"].sum()) for b in batches),
                               sum(float((b["seg"] >= 0).sum()) for b in batches)], device=self.device)
        if self.world > 1:
            dist.all_reduce(counts)
        return counts

    def train_step(self) -> dict[str, torch.Tensor]:
        batches = [self.loader.next_batch() for _ in range(self.cfg.train.grad_accum)]
        counts = self._global_counts(batches)
        # Per-micro-batch denominators: the engine averages over ranks and accumulation steps.
        scale = self.world * self.cfg.train.grad_accum
        ntp_den, jepa_den = counts[0].clamp_min(1) / scale, counts[1].clamp_min(1) / scale
        sums = torch.zeros(3, device=self.device)
        for batch in batches:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss, stats = self.engine(batch, ntp_den, jepa_den)
            self.engine.backward(loss)
            self.engine.step()
            sums += torch.stack([stats["ntp_sum"].float(), stats["jepa_sum"].float(), stats["cos_sum"].float()])
        self.step += 1
        return {"sums": sums, "counts": counts}

    def _log(self, acc: dict, elapsed: float, steps: int) -> None:
        sums = acc["sums"]
        if self.world > 1:
            dist.all_reduce(sums)
        counts = acc["counts"]
        lm = (sums[0] / counts[0].clamp_min(1)).item()
        n_pairs = counts[1].item()
        jepa = (sums[1] / counts[1].clamp_min(1)).item() if n_pairs else 0.0
        cos = (sums[2] / counts[1].clamp_min(1)).item() if n_pairs else 0.0
        j = self.cfg.jepa
        scalars = {"loss/total": j.gamma * lm + j.lam * jepa, "loss/lm": lm, "loss/jepa": jepa,
                   "jepa/cosine": cos, "lr": self.scheduler.get_last_lr()[0] if self.scheduler else self.cfg.train.lr,
                   "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
                   "throughput/tokens_per_s": counts[2].item() / max(elapsed, 1e-9),
                   "data/epoch": self.loader.epoch}
        self.logger.log(self.step, scalars)

    def run(self) -> None:
        t = self.cfg.train
        acc, last = None, time.perf_counter()
        while self.step < t.max_steps:
            out = self.train_step()
            acc = out if acc is None else {k: acc[k] + out[k] for k in out}
            if self.step % t.log_interval == 0 or self.step == t.max_steps:
                now = time.perf_counter()
                self._log(acc, now - last, t.log_interval)
                acc, last = None, now
            if self.step % t.save_interval == 0 and self.step < t.max_steps:
                self.save()
        self.save()
        self.logger.close()
