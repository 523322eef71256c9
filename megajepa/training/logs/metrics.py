"""Scalars to stdout and TensorBoard (`output_dir/tensorboard`), rank 0 only."""
from __future__ import annotations

import logging
import os

log = logging.getLogger("megajepa")


class MetricsLogger:
    def __init__(self, output_dir: str, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        short = " ".join(f"{k.split('/')[-1]}={_fmt(v)}" for k, v in scalars.items())
        log.info("step %d %s", step, short)

    def warn(self, message: str) -> None:
        if self.enabled:
            log.warning(message)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
