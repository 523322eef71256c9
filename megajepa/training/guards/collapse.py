"""Collapse monitoring for the JEPA embeddings (the known failure of JEPA training: dimensional collapse).

Every log interval, over the Enc (target) and Pred embeddings of a micro-batch gathered from every
data-parallel rank:
  effective rank  exp(entropy of the normalised singular values) (RankMe, Garrido et al. 2023)
  cos_pred_target mean cosine between each Pred and its own target
  cos_pred_other  mean cosine between each Pred and every non-matching target
A warning is logged when an effective rank falls below `warn_fraction` x the embedding width (capped
by the number of embeddings, which bounds the rank), or, once `after_step` (the LR warm-up) has passed,
when Pred is no closer to its own target than to the others' (cos_pred_target - cos_pred_other below
`cos_margin` for CONFIRM log intervals in a row: right after init every embedding points alike for a while): with few pairs per micro-batch (loss dropout) a collapsed set keeps an effective rank of
2-3, above any useful rank threshold, and only the cosines show that the term has stopped teaching.
STP runs also log the effective rank of the sampled hidden-state displacements (both vectors of
every sample; data/stp.py), `collapse/erank_stp`, and warn by the same rank rule when it falls low.
"""
from __future__ import annotations

import logging

import torch

from megajepa.objective.geometry import collapse_stats, effective_rank, gather_valid

log = logging.getLogger("megajepa")


class CollapseMonitor:
    REPEAT = 10  # while collapsed, repeat the warning every this many log intervals, not every one
    CONFIRM = 3  # log intervals in a row the cosine margin must stay below jepa.collapse_cos_margin

    def __init__(self, width: int, warn_fraction: float, cos_margin: float = 0.0, after_step: int = 0):
        self.width, self.warn_fraction = width, warn_fraction
        self.cos_margin, self.after_step = cos_margin, after_step
        self.collapsed_intervals = 0
        self.close_intervals = 0  # log intervals in a row with Pred as close to the others' targets as to its own
        self.stp_low_intervals = 0  # log intervals in a row with the STP displacements' rank below the threshold

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, step: int,
                 warn: bool = True) -> dict[str, float]:
        """Collective (every rank must call it); returns the scalars (empty when no pairs anywhere)."""
        pred, target = gather_valid(pred, mask), gather_valid(target, mask)
        if pred.shape[0] < 2:
            return {}
        stats = collapse_stats(pred, target)
        threshold = self.warn_fraction * min(self.width, pred.shape[0])
        low = [f"{n} = {stats[n]:.2f} below {threshold:.2f} (jepa.collapse_warn_fraction {self.warn_fraction:g} x "
               f"min(width {self.width}, {pred.shape[0]} embeddings))"
               for n in ("collapse/erank_enc", "collapse/erank_pred") if stats[n] < threshold]
        margin = stats["collapse/cos_pred_target"] - stats["collapse/cos_pred_other"]
        close = step > self.after_step and margin < self.cos_margin
        self.close_intervals = self.close_intervals + 1 if close else 0
        if self.close_intervals >= self.CONFIRM:  # at init every embedding points alike for a while
            low.append(f"cos_pred_target - cos_pred_other = {margin:.3f} below jepa.collapse_cos_margin "
                       f"{self.cos_margin:g} for {self.close_intervals} log intervals")
        self.collapsed_intervals = self.collapsed_intervals + 1 if low else 0
        if warn and low and self.collapsed_intervals % self.REPEAT == 1:
            log.warning("step %d: %s: the JEPA embeddings may be collapsing%s", step, "; ".join(low),
                        "" if self.collapsed_intervals == 1 else f" (for {self.collapsed_intervals} log intervals)")
        return stats

    @property
    def warned(self) -> bool:
        """Whether the last log interval warned (the end-of-run summary's collapse word)."""
        return self.collapsed_intervals > 0 or self.stp_low_intervals > 0

    def displacements(self, vectors: torch.Tensor, weight: torch.Tensor, step: int = 0,
                      warn: bool = True) -> dict[str, float]:
        """Collective: {collapse/erank_stp} over the STP vectors [S, 2, D] of real samples (weight > 0) on every
        rank; empty when fewer than 2."""
        rows = gather_valid(vectors.reshape(-1, vectors.shape[-1]), weight.to(vectors.device).repeat_interleave(2))
        if rows.shape[0] < 2:
            return {}
        erank = effective_rank(rows)
        threshold = self.warn_fraction * min(self.width, rows.shape[0])
        self.stp_low_intervals = self.stp_low_intervals + 1 if erank < threshold else 0
        if warn and self.stp_low_intervals % self.REPEAT == 1:
            log.warning("step %d: collapse/erank_stp = %.2f below %.2f (jepa.collapse_warn_fraction %g x min(width "
                        "%d, %d displacement vectors)): the STP displacements may be collapsing%s", step, erank,
                        threshold, self.warn_fraction, self.width, rows.shape[0],
                        "" if self.stp_low_intervals == 1 else f" (for {self.stp_low_intervals} log intervals)")
        return {"collapse/erank_stp": erank}
