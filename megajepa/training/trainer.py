"""The training loop: build everything from a RunConfig, then per step: train_step, log, save."""
from __future__ import annotations

import logging
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist

from megajepa import distributed
from megajepa.config import RunConfig
from megajepa.data import corpus, preprocess
from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.loader import DistributedRowLoader, PackedEpochs
from megajepa.data.packing import IGNORE, LayoutConfig, Specials
from megajepa.data.tokenizer.hf import load_tokenizer
from megajepa.data.tokenizer.sentencepiece import Tokenizer, load_or_train
from megajepa.eval.periodic import PeriodicEval
from megajepa.interop.hf_files import HFCheckpoint
from megajepa.interop.load_hf import load_hf_weights, model_config_for, run_tokenizer
from megajepa.model.flops import batch_train_flops, throughput_scalars
from megajepa.model.transformer import describe, resolve_model_config
from megajepa.objective.hybrid import HybridObjective
from megajepa.objective.losses import gather_across_ranks
from megajepa.training.checkpoint import store as checkpoint
from megajepa.training.checkpoint import universal
from megajepa.training.compiling import compile_objective, use_flex_attention
from megajepa.training.engine import build_engine, build_model, resolve_ds_config
from megajepa.training.guards import preemption
from megajepa.training.guards.collapse import CollapseMonitor
from megajepa.training.guards.nonfinite import NonFiniteGuard, poison
from megajepa.training.logs.metrics import MetricsLogger
from megajepa.training.logs.step_log import StepLog

log = logging.getLogger("megajepa")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: RunConfig, dist_info: distributed.DistInfo):
        self.cfg, self.dist = cfg, dist_info
        self.stop = preemption.StopSignals()  # first: a signal during setup is honoured after step one
        self.rank, self.world = dist_info.rank, dist_info.world_size
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        seed_everything(cfg.seed)  # same on every rank: identical init whatever the world size
        ds = resolve_ds_config(cfg, self.world)  # config errors before any data or model work
        self.resume_from = self._resume_target()
        if self.resume_from and universal.needs_universal(os.path.join(*self.resume_from), self.world):
            universal.enable_in(ds)  # written by another rank count: DeepSpeed re-partitions it on load

        self.tokenizer, self.epochs = self._data()
        # the eval set and eval.* are checked before the model is built
        self.evaluator = PeriodicEval(cfg, self.tokenizer, self.rank, self.world) if cfg.eval.interval else None
        self.specials = Specials.from_tokenizer(self.tokenizer)
        self.loader = DistributedRowLoader(self.epochs, cfg.train.micro_batch_size, self.rank, self.world)

        if cfg.model.init_from_hf:  # the checkpoint's architecture, vocabulary grown for the added tokens
            self.model_cfg = model_config_for(self.hf_checkpoint, self.tokenizer, cfg.model)
        else:
            self.model_cfg = resolve_model_config(cfg.model, self.tokenizer.vocab_size)
        if self.rank == 0:
            log.info(describe(self.model_cfg))
        resuming = self.resume_from is not None
        model = build_model(self.model_cfg, ds, initialise=not (cfg.model.init_from_hf or resuming))
        if cfg.model.init_from_hf and not resuming:  # a resumed run loads its own checkpoint instead
            load_hf_weights(model, self.hf_checkpoint, self.tokenizer.added_ids(), self.rank)
        model.activation_checkpointing = cfg.train.activation_checkpointing
        model.checkpoint_every = cfg.train.activation_checkpointing_every
        self.objective = HybridObjective(model, cfg.jepa, use_flex=use_flex_attention(self.device))
        if cfg.train.compile:
            compile_objective(self.objective)
        if self.world > 1 and cfg.jepa.distance == "infonce":  # negatives from every data-parallel rank
            self.objective.gather_targets = gather_across_ranks
        self.monitor = CollapseMonitor(self.model_cfg.dim, cfg.jepa.collapse_warn_fraction)
        self._embeddings = None  # the last micro-batch's (Pred, Enc, pair mask), for the monitor
        self.engine, self.scheduler = build_engine(self.objective, ds, cfg.train.weight_decay)
        self.logger = MetricsLogger(cfg.output_dir, enabled=self.rank == 0)
        self.step_log = StepLog(cfg.output_dir, enabled=self.rank == 0)
        self.nonfinite = NonFiniteGuard(cfg.train.max_nonfinite_steps)
        self.step = 0
        self.last_checkpoint: str | None = None  # named when too many non-finite steps stop the run
        self.data_wait_s = 0.0
        self._maybe_resume()

    def _data(self):
        """(tokenizer, row source): preprocessed shards (data.shards), else the corpus tokenized and packed
        here. Every bad record is reported (or raised, data.on_bad_record=error) before the model is built."""
        cfg = self.cfg
        if cfg.data.shards:  # continued pretraining: the checkpoint's tokenizer, checked against the shards'
            tokenizer = self._tokenizer(None) if cfg.model.init_from_hf else \
                load_tokenizer(preprocess.shard_tokenizer_path(cfg))
            return tokenizer, preprocess.open_checked(cfg, tokenizer)
        report = BadRecordReport()
        records = corpus.train_records(cfg)
        tokenizer = self._tokenizer(records)
        # One view is a plain NTP document (a text record in a mixture); two or more also get the JEPA term.
        min_views = 2 if cfg.jepa.lam > 0 else 1  # a one-view views record cannot give a JEPA pair
        examples = tokenize_records(records, tokenizer, min_views, cfg.data.on_bad_record, report,
                                    with_prompt=cfg.data.system_prompt, extra_fields=cfg.data.extra_view_fields)
        epochs = PackedEpochs(examples, Specials.from_tokenizer(tokenizer), LayoutConfig.from_run(cfg),
                              cfg.data.seq_len, cfg.seed, cfg.jepa.dropout, cfg.jepa.lam > 0, cfg.data.on_bad_record,
                              report)
        if report.total:
            log.warning("skipped %d bad record(s) %s; first: %s", report.total, report.counts, report.first[:5])
        return tokenizer, epochs

    def _tokenizer(self, records) -> Tokenizer:
        if self.cfg.model.init_from_hf:  # continued pretraining keeps the checkpoint's tokenizer
            self.hf_checkpoint = HFCheckpoint(self.cfg.model.init_from_hf)
            return run_tokenizer(self.cfg.model.init_from_hf, self.cfg.output_dir, self.rank)
        if self.cfg.data.tokenizer:
            return load_tokenizer(self.cfg.data.tokenizer)
        cache = os.path.join(self.cfg.output_dir, "tokenizer")
        if self.rank == 0:  # one rank trains, the others read the file it wrote
            os.makedirs(cache, exist_ok=True)
            load_or_train(cache, lambda: corpus.record_texts(records, self.cfg.data.extra_view_fields),
                          self.cfg.data.vocab_size,
                          seed=self.cfg.seed)
        distributed.barrier()
        return Tokenizer.load(os.path.join(cache, "tokenizer.model"))

    # ------------------------------------------------------------------ checkpoints
    def _resume_target(self) -> tuple[str, str] | None:
        """(checkpoint root, tag) this run resumes from, or None for a fresh start."""
        if self.cfg.resume == "none":
            return None
        if self.cfg.resume == "auto":
            tag = checkpoint.latest_tag(self.cfg.output_dir)
            return None if tag is None else (checkpoint.checkpoint_dir(self.cfg.output_dir), tag)
        return os.path.split(os.path.abspath(self.cfg.resume))

    def _maybe_resume(self) -> None:
        if self.resume_from is None:
            if self.cfg.resume == "auto":
                log.info("resume=auto: no checkpoint in %s, starting fresh", self.cfg.output_dir)
            return
        root, tag = self.resume_from
        state = checkpoint.load(self.engine, root, tag, self.rank)
        self.step = state["step"]
        self.loader.load_state_dict(state["data"])
        self.nonfinite.total = state.get("nonfinite_total", 0)
        self.last_checkpoint = os.path.join(root, tag)
        log.info("resumed from %s at step %d", os.path.join(root, tag), self.step)

    def save(self) -> str:
        state = {"step": self.step, "data": self.loader.state_dict(), "config": self.cfg.to_dict(),
                 "model_config": self.model_cfg.__dict__, "tokenizer": self.tokenizer.path,
                 "nonfinite_total": self.nonfinite.total}
        path = checkpoint.save(self.engine, self.cfg.output_dir, self.step, state, self.rank, self.cfg.train.keep_last)
        log.info("saved checkpoint %s", path)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ the step
    def _global_counts(self, batches) -> torch.Tensor:
        """Labelled tokens, JEPA pairs, real tokens and model FLOPs over the whole step on every rank (one
        all-reduce of host-side counts: no device sync)."""
        counts = torch.tensor([sum(float((b["labels"] != IGNORE).sum()) for b in batches),
                               sum(float(b["pair_mask"].sum()) for b in batches),
                               sum(float((b["seg"] >= 0).sum()) for b in batches),
                               sum(float(batch_train_flops(self.model_cfg, b)) for b in batches)], device=self.device)
        if self.world > 1:
            dist.all_reduce(counts)
        return counts

    def train_step(self) -> dict[str, torch.Tensor]:
        waited = time.perf_counter()
        batches = [self.loader.next_batch() for _ in range(self.cfg.train.grad_accum)]
        self.data_wait_s += time.perf_counter() - waited  # host time spent producing batches, not computing
        counts = self._global_counts(batches)
        # Per-micro-batch denominators: the engine averages over ranks and accumulation steps.
        scale = self.world * self.cfg.train.grad_accum
        ntp_den, jepa_den = counts[0].clamp_min(1) / scale, counts[1].clamp_min(1) / scale
        sums = torch.zeros(3, device=self.device)
        for batch in batches:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss, stats = self.engine(batch, ntp_den, jepa_den)
            self.engine.backward(poison(loss))  # a non-finite loss gets NaN gradients: the engine skips the update
            self.engine.step()
            sums += torch.stack([stats["ntp_sum"].float(), stats["jepa_sum"].float(), stats["cos_sum"].float()])
            self._embeddings = (stats["pred"], stats["target"], batch["pair_mask"])
        self.step += 1
        if self.world > 1:  # every step: losses.jsonl and the non-finite check need the global loss
            dist.all_reduce(sums)
        return {"sums": sums, "counts": counts}

    def _record_step(self, out: dict) -> bool:
        """One line of losses.jsonl; False when the update was skipped (non-finite loss or gradient)."""
        sums, counts, j = out["sums"].tolist(), out["counts"].tolist(), self.cfg.jepa
        lm = sums[0] / max(counts[0], 1)
        jepa = sums[1] / max(counts[1], 1)
        terms = {"loss": j.gamma * lm + j.lam * jepa, "lm": lm, "jepa": jepa,
                 "grad_norm": float(self.engine.get_global_grad_norm() or 0.0)}
        skipped = self.nonfinite.update(self.engine.was_step_applied(), terms)
        lr = self.engine.get_lr()[0]  # what the optimizer holds (a restored scheduler's get_last_lr is stale)
        self.step_log.write({"step": self.step, **terms, "lr": lr, "skipped": skipped,
                             "skipped_total": self.nonfinite.total})
        if skipped:
            log.warning("step %d: non-finite loss or gradient (%s): update skipped (%d in a row, %d in all)",
                        self.step, terms, self.nonfinite.in_a_row, self.nonfinite.total)
        self.nonfinite.check(self.step, terms, self.last_checkpoint)
        return not skipped

    def _log(self, acc: dict, elapsed: float, steps: int) -> None:
        sums = acc["sums"]
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
                   **throughput_scalars(counts[3].item(), elapsed, self.device, self.world),
                   "data/epoch": self.loader.epoch, "data/wait_fraction": self.data_wait_s / max(elapsed, 1e-9),
                   "train/skipped_steps": self.nonfinite.total}
        self.data_wait_s = 0.0
        if j.lam > 0 and self._embeddings is not None:  # collective: every rank gathers
            scalars.update(self.monitor(*self._embeddings, self.step, warn=self.rank == 0))
        self.logger.log(self.step, scalars)

    def evaluate(self) -> None:
        """Greedy generation on the eval set (every rank, collectively), scores logged on rank 0."""
        scalars = self.evaluator.run(self.objective.model, self.step)
        if scalars is not None:
            self.logger.log(self.step, scalars)

    def run(self) -> None:
        t = self.cfg.train
        acc, last = None, time.perf_counter()
        try:
            while self.step < t.max_steps:
                out = self.train_step()
                if self._record_step(out):  # a skipped update's losses stay out of the logged averages
                    acc = out if acc is None else {k: acc[k] + out[k] for k in out}
                if (self.step % t.log_interval == 0 or self.step == t.max_steps) and acc is not None:
                    now = time.perf_counter()
                    self._log(acc, now - last, t.log_interval)
                    acc, last = None, now
                if self.evaluator is not None and self.step % self.cfg.eval.interval == 0:
                    self.evaluate()
                stop = self.stop.agreed(self.device) and self.step < t.max_steps  # collective: the same step everywhere
                if stop or (self.step % t.save_interval == 0 and self.step < t.max_steps):
                    self.save()
                if stop:
                    raise preemption.Preempted(self.step, self.stop.name, self.last_checkpoint)
            final = os.path.join(checkpoint.checkpoint_dir(self.cfg.output_dir), checkpoint.tag_for(self.step))
            if os.path.abspath(self.last_checkpoint or "") != os.path.abspath(final):  # not when resumed at the end
                self.save()
        finally:
            if self.stop.received is None:
                self.stop.restore()
            else:
                self.stop.ignore_from_now()
            self.logger.close()
            self.step_log.close()
