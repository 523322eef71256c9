"""Embedding geometry shared by the collapse monitor and the analysis tool: effective rank (RankMe,
Garrido et al. 2023) and the cosines of Pred to its own and to the other targets."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


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
