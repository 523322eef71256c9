"""Non-finite loss or gradient: the update is skipped, counted, and too many in a row stop the run.

The skip is DeepSpeed's own: ZeRO-3's optimizer step checks the global gradient norm (all-reduced, so
every rank agrees) and, when it is not finite, zeroes the gradients, leaves weights, optimizer state
and LR schedule untouched and reports `engine.was_step_applied() == False`. A non-finite loss can
still have finite gradients (an overflowed cross-entropy has a bounded gradient), so `poison` turns it
into NaN gradients first: both cases then take the same path.
"""
from __future__ import annotations

import math

import torch


class NonFiniteError(RuntimeError):
    """Too many skipped updates in a row; train.py exits with EXIT_NONFINITE."""


EXIT_NONFINITE = 3


def poison(loss: torch.Tensor) -> torch.Tensor:
    """loss where it is finite; otherwise a loss whose gradient is NaN everywhere (no host sync)."""
    return loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))


class NonFiniteGuard:
    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total = 0

    def update(self, applied: bool, terms: dict[str, float]) -> bool:
        """Record one step; True when its update was skipped (by the engine, or a non-finite loss term)."""
        if applied and all(math.isfinite(v) for v in terms.values()):
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        self.total += 1
        return True

    def check(self, step: int, terms: dict[str, float], last_checkpoint: str | None) -> None:
        """Raises NonFiniteError once max_in_a_row updates in a row were skipped."""
        if self.in_a_row >= self.max_in_a_row:
            values = " ".join(f"{k}={v:.6g}" for k, v in terms.items())
            raise NonFiniteError(
                f"step {step}: non-finite loss or gradient for {self.in_a_row} steps in a row "
                f"(train.max_nonfinite_steps={self.max_in_a_row}), {self.total} skipped in all; loss terms: "
                f"{values}; last good checkpoint: {last_checkpoint or 'none'} (resume from it with resume=<path>, "
                f"e.g. with a lower train.lr)")
