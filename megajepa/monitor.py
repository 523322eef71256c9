"""Collapse monitoring for the JEPA embeddings (the known failure of JEPA training: dimensional collapse).

Every log interval, over the Enc (target) and Pred embeddings of a micro-batch gathered from every
data-parallel rank:
  effective rank  exp(entropy of the normalised singular values) (RankMe, Garrido et al. 2023)
  cos_pred_target mean cosine between each Pred and its own target
  cos_pred_other  mean cosine between each Pred and every non-matching target
A warning is logged when an effective rank falls below `warn_fraction` x the embedding width (capped
by the number of embeddings, which bounds the rank).
"""
from __future__ import annotations

import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger("megajepa")


def effective_rank(x: torch.Tensor) -> float:
    """exp(H(p)), p = singular values / their sum; 1 for a rank-one set, D for an isotropic one."""
    s = torch.linalg.svdvals(x.float())
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy))


def gather_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows with mask > 0 from every rank (each rank pads to the largest count for the all_gather)."""
    x = x[mask > 0]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, n)
    size = int(max(c.item() for c in counts))
    parts = [torch.zeros(size, x.shape[1], dtype=x.dtype, device=x.device) for _ in counts]
    dist.all_gather(parts, F.pad(x, (0, 0, 0, size - x.shape[0])).contiguous())
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts)])


def collapse_stats(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Scalars over matched rows pred[i] <-> target[i] (already gathered, no padding)."""
    n = pred.shape[0]
    cos = F.normalize(pred.float(), dim=-1) @ F.normalize(target.float(), dim=-1).T
    matching = cos.diagonal().mean()
    others = (cos.sum() - cos.diagonal().sum()) / max(n * (n - 1), 1)
    return {"collapse/erank_enc": effective_rank(target), "collapse/erank_pred": effective_rank(pred),
            "collapse/cos_pred_target": float(matching), "collapse/cos_pred_other": float(others)}


class CollapseMonitor:
    REPEAT = 10  # while collapsed, repeat the warning every this many log intervals, not every one

    def __init__(self, width: int, warn_fraction: float):
        self.width, self.warn_fraction = width, warn_fraction
        self.collapsed_intervals = 0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, step: int,
                 warn: bool = True) -> dict[str, float]:
        """Collective (every rank must call it); returns the scalars (empty when no pairs anywhere)."""
        pred, target = gather_valid(pred, mask), gather_valid(target, mask)
        if pred.shape[0] < 2:
            return {}
        stats = collapse_stats(pred, target)
        threshold = self.warn_fraction * min(self.width, pred.shape[0])
        low = [n for n in ("collapse/erank_enc", "collapse/erank_pred") if stats[n] < threshold]
        self.collapsed_intervals = self.collapsed_intervals + 1 if low else 0
        if warn and low and self.collapsed_intervals % self.REPEAT == 1:
            log.warning("step %d: %s below %.2f (jepa.collapse_warn_fraction %g x min(width %d, %d embeddings)): "
                        "the JEPA embeddings may be collapsing%s", step,
                        ", ".join(f"{n} = {stats[n]:.2f}" for n in low), threshold, self.warn_fraction, self.width,
                        pred.shape[0], "" if self.collapsed_intervals == 1 else
                        f" (for {self.collapsed_intervals} log intervals)")
        return stats
