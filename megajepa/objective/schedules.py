"""Loss-term weights as functions of the training step, shared by the objective and the logs: a linear
warm-up (the reference's `--lbd_warmup`) and the reference's whole-micro-batch JEPA dropout (`--jepa_ratio`).
Any weighted term (jepa.lambda, jepa.reg_weight, stp.lambda) takes its value at a step from `warmed`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megajepa.config import JepaConfig, StpConfig

MICRO_BATCH_DROPOUT_STREAM = 0x6A726174  # "jrat": keeps these draws apart from every other use of the run seed


def warmed(weight: float, min_value: float, warmup_steps: int, step: int) -> float:
    """`weight` ramped linearly from `min_value` at step 0 to `weight` at step `warmup_steps`, constant after
    (warmup_steps 0: `weight` from the start). The reference ramps over the whole run: its
    global_step / (max_steps - 1) is this with warmup_steps = train.max_steps - 1."""
    if step >= warmup_steps:
        return weight
    return min_value + (weight - min_value) * step / warmup_steps


def micro_batch_kept(drop_probability: float, seed: int, step: int, micro_step: int) -> bool:
    """Whether the whole-micro-batch dropout keeps the JEPA term of (step, micro_step): kept with probability
    1 - drop_probability, drawn from (run seed, step, micro-step) alone, so every rank and a resumed run
    draw the same."""
    if drop_probability <= 0.0:
        return True
    rng = np.random.default_rng([seed, MICRO_BATCH_DROPOUT_STREAM, step, micro_step])
    return bool(rng.random() >= drop_probability)


@dataclass(frozen=True)
class TermWeights:
    lam: float  # the JEPA term's weight in force (0 for a micro-batch the paper dropout drops)
    reg: float  # the regularizer's
    stp: float = 0.0  # the STP term's (0: off)


def term_weights(jepa: JepaConfig, step: int, seed: int = 0, micro_step: int = 0,
                 stp: StpConfig | None = None) -> TermWeights:
    """The weights of (step, micro_step), for the objective and the logs alike: each warmed up; under
    dropout_weighting=paper lambda is 0 for a dropped micro-batch, not renormalised (expected weight
    lambda * (1 - dropout))."""
    lam = warmed(jepa.lam, jepa.lambda_min, jepa.lambda_warmup_steps, step)
    if jepa.dropout_weighting == "paper" and not micro_batch_kept(jepa.dropout, seed, step, micro_step):
        lam = 0.0
    stp_weight = warmed(stp.lam, stp.lambda_min, stp.lambda_warmup_steps, step) if stp is not None else 0.0
    return TermWeights(lam, warmed(jepa.reg_weight, jepa.reg_min, jepa.reg_warmup_steps, step), stp_weight)
