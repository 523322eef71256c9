"""Semantic Tube Prediction (Huang, LeCun, Balestriero, arXiv 2602.22617): 1 - cos between two displacements
of the NTP stream's own final-norm hidden states, at no extra tokens. Which displacements is data/stp.py's
business (it samples them on the host); this is one gather + cosine over every sample of the micro-batch.

Returned as a weighted sum (the caller divides by the step's global weight sum, as the JEPA pairs by their
count); padded sample slots carry weight 0. Float32, no host sync, static shapes for torch.compile.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def stp_vectors(hidden_flat: torch.Tensor, stp_idx: torch.Tensor) -> torch.Tensor:
    """[S, 2, D] float32: each sample's two vectors, sums of h[end] - h[start] over stp_idx [S, 2, terms, 2]."""
    rows = hidden_flat.index_select(0, stp_idx.reshape(-1)).float().reshape(*stp_idx.shape, -1)
    return (rows[..., 0, :] - rows[..., 1, :]).sum(2)


def stp_sum(hidden_flat: torch.Tensor, stp_idx: torch.Tensor, stp_weight: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of weight * (1 - cos(a, b)) over the samples, the [S, 2, D] vectors for the collapse monitor)."""
    vectors = stp_vectors(hidden_flat, stp_idx)
    d = 1.0 - F.cosine_similarity(vectors[:, 0], vectors[:, 1], dim=-1, eps=1e-8)
    w = stp_weight.to(d.device, torch.float32)
    return torch.where(w > 0, d * w, torch.zeros_like(d)).sum(), vectors


_compiled_stp_sum = None


def stp_term(hidden_flat: torch.Tensor, stp_idx: torch.Tensor, stp_weight: torch.Tensor, compiled: bool = False):
    """stp_sum, under torch.compile with train.compile (sample counts are bucketed: few shapes)."""
    global _compiled_stp_sum
    if not compiled:
        return stp_sum(hidden_flat, stp_idx, stp_weight)
    if _compiled_stp_sum is None:
        _compiled_stp_sum = torch.compile(stp_sum, dynamic=False)
    return _compiled_stp_sum(hidden_flat, stp_idx, stp_weight)
