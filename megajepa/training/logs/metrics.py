"""Scalars to stdout, TensorBoard (`output_dir/tensorboard`) and, with `logging.wandb`, W&B
(`output_dir/wandb`): one logger, the same scalars to every sink, rank 0 only."""
from __future__ import annotations

import logging
import os

from megajepa.config import LoggingConfig

log = logging.getLogger("megajepa")


class MetricsLogger:
    def __init__(self, output_dir: str, enabled: bool, cfg: LoggingConfig | None = None,
                 run_config: dict | None = None):
        self.writer = self.wandb_run = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))
        if cfg is not None and cfg.wandb:
            import wandb
            os.makedirs(output_dir, exist_ok=True)
            self.wandb_run = wandb.init(project=cfg.project, name=cfg.name or os.path.basename(
                os.path.normpath(output_dir)), tags=list(cfg.tags), dir=output_dir, config=run_config)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)
        last = [k.split("/")[-1] for k in scalars]  # the short name, unless two scalars share it (loss/reg, weight/reg)
        short = " ".join(f"{n if last.count(n) == 1 else k}={_fmt(v)}" for n, (k, v) in zip(last, scalars.items()))
        log.info("step %d %s", step, short)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
