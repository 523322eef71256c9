"""The training loop, top to bottom: resume, then per step train_step, record, log, evaluate, save."""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import torch
import torch.distributed as dist

from megajepa import distributed
from megajepa.config import RunConfig
from megajepa.data.packing import IGNORE
from megajepa.model.flops import batch_train_flops, throughput_scalars
from megajepa.objective.hybrid import regularized, stp_on, total_loss
from megajepa.objective.schedules import TermWeights, term_weights
from megajepa.training.build import Built, build
from megajepa.training.checkpoint import store as checkpoint
from megajepa.training.checkpoint.locate import checkpoint_dir, tag_for
from megajepa.training.guards import preemption
from megajepa.training.guards.collapse import CollapseMonitor
from megajepa.training.guards.nonfinite import NonFiniteGuard, poison
from megajepa.training.logs import report, step_log
from megajepa.training.logs.metrics import MetricsLogger
from megajepa.training.logs.step_log import StepLog

log = logging.getLogger("megajepa")


def train(cfg: RunConfig, dist_info: distributed.DistInfo) -> None:
    """Build the run from its config, then run it."""
    stop = preemption.StopSignals()  # first: a signal during setup is honoured after step one
    Trainer(build(cfg, dist_info), stop).run()


class Trainer:
    """The loop over a built run (training/build.py)."""

    def __init__(self, built: Built, stop: preemption.StopSignals):
        self.cfg, self.stop, b = built.cfg, stop, built
        self.rank, self.world, self.device = b.rank, b.world, b.device
        self.tokenizer, self.loader, self.model_cfg = b.tokenizer, b.loader, b.model_cfg
        self.objective, self.engine, self.evaluator = b.objective, b.engine, b.evaluator
        self.monitor = CollapseMonitor(self.model_cfg.dim, self.cfg.jepa.collapse_warn_fraction,
                                       self.cfg.jepa.collapse_cos_margin, after_step=self.cfg.train.warmup_steps)
        self._embeddings = None  # the last micro-batch's (Pred, Enc, pair mask), for the monitor
        self._stp_vectors = None  # the last micro-batch's STP displacements and sample weights, for the monitor
        self._warned_short_documents = False
        self.logger = MetricsLogger(self.cfg.output_dir, self.rank == 0, self.cfg.logging, self.cfg.to_dict())
        self.step_log = StepLog(self.cfg.output_dir, enabled=self.rank == 0)
        self.nonfinite = NonFiniteGuard(self.cfg.train.max_nonfinite_steps)
        self.step = 0
        self.last_checkpoint: str | None = None  # named when too many non-finite steps stop the run
        self.data_wait_s = 0.0
        self.last_scalars: dict[str, float] = {}  # the newest logged value of each scalar, for the summary
        self._interval_weights: list[TermWeights] = []  # the loss weights of each step since the last log
        self.resume_from = b.resume_from
        self._maybe_resume()

    # ------------------------------------------------------------------ checkpoints
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
                 "model_config": dataclasses.asdict(self.model_cfg), "tokenizer": self.tokenizer.path,
                 "nonfinite_total": self.nonfinite.total}
        path = checkpoint.save(self.engine, self.cfg.output_dir, self.step, state, self.rank, self.cfg.train.keep_last)
        log.info("saved checkpoint %s", path)
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ the step
    def _global_counts(self, batches) -> torch.Tensor:
        """Labelled tokens, JEPA pairs, real tokens, model FLOPs, (rank, micro-batch) entries, STP sample
        weight and STP documents too short for stp.mode over the whole step on every rank (one all-reduce of
        host-side counts: no device sync)."""
        counts = torch.tensor([sum(float((b["labels"] != IGNORE).sum()) for b in batches),
                               sum(float(b["pair_mask"].sum()) for b in batches),
                               sum(float((b["seg"] >= 0).sum()) for b in batches),
                               sum(float(batch_train_flops(self.model_cfg, b)) for b in batches),
                               float(len(batches)),
                               sum(float(b["stp_weight"].sum()) for b in batches if "stp_weight" in b),
                               sum(float(b["stp_skipped"]) for b in batches if "stp_skipped" in b)],
                              device=self.device)
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
        stp_den = torch.where(counts[5] > 0, counts[5], torch.ones_like(counts[5])) / scale  # weights may be < 1
        sums = torch.zeros(5, device=self.device)
        for micro_step, batch in enumerate(batches):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss, stats = self.engine(batch, ntp_den, jepa_den, self.step, micro_step, stp_denominator=stp_den)
            self.engine.backward(poison(loss))  # a non-finite loss gets NaN gradients: the engine skips the update
            self.engine.step()
            sums += torch.stack([stats["ntp_sum"].float(), stats["jepa_sum"].float(), stats["cos_sum"].float(),
                                 stats["reg"].float(), stats.get("stp_sum", sums.new_zeros(())).float()])
            self._embeddings = (stats["pred"], stats["target"], batch["pair_mask"])
            if "stp_vectors" in stats:
                self._stp_vectors = (stats["stp_vectors"], batch["stp_weight"])
        weights = self.step_weights(self.step)
        self.step += 1
        if self.world > 1:  # every step: losses.jsonl and the non-finite check need the global loss
            dist.all_reduce(sums)
        return {"sums": sums, "counts": counts, "weights": weights}

    def step_weights(self, step: int) -> TermWeights:
        """The loss weights a step trained with, as its logs report them: the mean over its micro-steps
        (they differ only where the paper dropout drops some micro-batches and keeps others)."""
        each = [term_weights(self.cfg.jepa, step, self.cfg.seed, m, self.cfg.stp)
                for m in range(self.cfg.train.grad_accum)]
        return _mean_weights(each)

    def _record_step(self, out: dict) -> bool:
        """One line of losses.jsonl; False when the update was skipped (non-finite loss or gradient)."""
        sums, counts, j = out["sums"].tolist(), out["counts"].tolist(), self.cfg.jepa
        lm = sums[0] / max(counts[0], 1)
        jepa = sums[1] / max(counts[1], 1)
        reg = sums[3] / max(counts[4], 1)  # a micro-batch's R is already global: mean over micro-batch entries
        w = out["weights"]
        stp = sums[4] / (counts[5] or 1)
        terms = {"loss": total_loss(j, w, lm, jepa, reg, stp), "lm": lm, "jepa": jepa,
                 **({"reg": reg} if regularized(j) else {}), **({"stp": stp} if stp_on(self.cfg.stp) else {}),
                 "lambda": w.lam, **({"reg_weight": w.reg} if regularized(j) else {}),
                 **({"stp_weight": w.stp} if stp_on(self.cfg.stp) else {}),
                 "grad_norm": float(self.engine.get_global_grad_norm() or 0.0)}
        skipped = self.nonfinite.update(self.engine.was_step_applied(), terms)
        self.step_log.write({"step": self.step, **terms, "lr": self.lr(), "skipped": skipped,
                             "skipped_total": self.nonfinite.total, "tokens": int(counts[2]), "flops": counts[3]})
        if skipped:
            log.warning("step %d: non-finite loss or gradient (%s): update skipped (%d in a row, %d in all)",
                        self.step, terms, self.nonfinite.in_a_row, self.nonfinite.total)
        self.nonfinite.check(self.step, terms, self.last_checkpoint)
        if not skipped:
            self._interval_weights.append(w)
        return not skipped

    def lr(self) -> float:
        """The learning rate the optimizer holds (a restored scheduler's get_last_lr is stale): the one source."""
        return self.engine.get_lr()[0]

    def _log(self, acc: dict, elapsed: float) -> None:
        sums = acc["sums"]
        counts = acc["counts"]
        lm = (sums[0] / counts[0].clamp_min(1)).item()
        n_pairs = counts[1].item()
        jepa = (sums[1] / counts[1].clamp_min(1)).item() if n_pairs else 0.0
        cos = (sums[2] / counts[1].clamp_min(1)).item() if n_pairs else 0.0
        reg = (sums[3] / counts[4].clamp_min(1)).item()
        stp = (sums[4] / counts[5]).item() if counts[5].item() > 0 else 0.0
        j, w = self.cfg.jepa, _mean_weights(self._interval_weights)
        self._interval_weights = []
        scalars = {"loss/total": total_loss(j, w, lm, jepa, reg, stp), "loss/lm": lm, "loss/jepa": jepa,
                   "loss/reg": reg, **self._stp_scalars(stp, counts[6].item()),
                   "weight/lambda": w.lam, "weight/reg": w.reg,
                   **({"weight/stp": w.stp} if stp_on(self.cfg.stp) else {}),
                   "jepa/cosine": cos, "lr": self.lr(),
                   "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
                   "throughput/tokens_per_s": counts[2].item() / max(elapsed, 1e-9),
                   **throughput_scalars(counts[3].item(), elapsed, self.device, self.world),
                   "data/epoch": self.loader.epoch, "data/wait_fraction": self.data_wait_s / max(elapsed, 1e-9),
                   "train/skipped_steps": self.nonfinite.total}
        self.data_wait_s = 0.0
        if j.lam > 0 and self._embeddings is not None:  # collective: every rank gathers
            scalars.update(self.monitor(*self._embeddings, self.step, warn=self.rank == 0))
        if stp_on(self.cfg.stp) and self._stp_vectors is not None:  # collective too
            scalars.update(self.monitor.displacements(*self._stp_vectors, self.step, warn=self.rank == 0))
        self.logger.log(self.step, scalars)
        self.last_scalars.update(scalars)

    def _stp_scalars(self, stp: float, skipped: float) -> dict[str, float]:
        """loss/stp and the documents too short for stp.mode (no sample drawn) over the log interval; the
        first interval that has any says so in the log (its count stays in the scalars)."""
        if not stp_on(self.cfg.stp):
            return {}
        if skipped and not self._warned_short_documents and self.rank == 0:
            log.warning("step %d: %d document(s) in this log interval were too short for stp.mode=%s and drew no "
                        "STP sample (stp/skipped_documents counts them every interval)", self.step, int(skipped),
                        self.cfg.stp.mode)
            self._warned_short_documents = True
        return {"loss/stp": stp, "stp/skipped_documents": skipped}

    def evaluate(self) -> None:
        """Greedy generation on the eval set (every rank, collectively), scores logged on rank 0."""
        scalars = self.evaluator.run(self.objective.model, self.step)
        if scalars is not None:
            self.logger.log(self.step, scalars)
            self.last_scalars.update(scalars)

    def _summarize(self) -> None:
        out = self.cfg.output_dir
        paths = report.make_report(out)
        last = step_log.read(os.path.join(out, "losses.jsonl")).get(self.step, {})
        evals = {k: v for k, v in self.last_scalars.items() if k.startswith("eval/")}
        log.info("%s", report.summary(out, self.step, last, self.last_scalars.get("throughput/tokens_per_s"),
                                      self.monitor.warned, self.last_checkpoint, evals, paths))

    def run(self) -> None:
        t = self.cfg.train
        acc, last = None, time.perf_counter()
        try:
            while self.step < t.max_steps:
                out = self.train_step()
                if self._record_step(out):  # a skipped update's losses stay out of the logged averages
                    acc = out if acc is None else {k: acc[k] + out[k] for k in ("sums", "counts")}
                if (self.step % t.log_interval == 0 or self.step == t.max_steps) and acc is not None:
                    now = time.perf_counter()
                    self._log(acc, now - last)
                    acc, last = None, now
                if self.evaluator is not None and self.step % self.cfg.eval.interval == 0:
                    self.evaluate()
                stop = self.stop.agreed(self.device) and self.step < t.max_steps  # collective: the same step everywhere
                if stop or (self.step % t.save_interval == 0 and self.step < t.max_steps):
                    self.save()
                if stop:
                    raise preemption.Preempted(self.step, self.stop.name, self.last_checkpoint)
            final = os.path.join(checkpoint_dir(self.cfg.output_dir), tag_for(self.step))
            if os.path.abspath(self.last_checkpoint or "") != os.path.abspath(final):  # not when resumed at the end
                self.save()
            if self.rank == 0:
                self.logger.close()  # TensorBoard flushed before the report reads it
                self._summarize()
        finally:
            if self.stop.received is None:
                self.stop.restore()
            else:
                self.stop.ignore_from_now()
            self.logger.close()
            self.step_log.close()


def _mean_weights(weights: list[TermWeights]) -> TermWeights:
    """The mean of some steps' weights; equal weights come back as they are (no rounding of a constant)."""
    if all(w == weights[0] for w in weights):
        return weights[0]
    n = len(weights)
    return TermWeights(sum(w.lam for w in weights) / n, sum(w.reg for w in weights) / n, sum(w.stp for w in weights) / n)
