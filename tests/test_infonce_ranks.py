"""InfoNCE with negatives from every data-parallel rank (2 gloo ranks on CPU).

Each rank holds a different number of pairs (different pair buckets). The sum of the ranks' losses
must equal one InfoNCE over all pairs in one process (every target a negative for every Pred), and
each rank's gradient with respect to its own hidden states must equal the single-process gradient
restricted to that rank's rows: the gather passes gradients back to the targets it came from.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from helpers import run_gloo_ranks

from megajepa.objective.losses import gather_across_ranks, jepa_terms

DIM, TEMPERATURE = 16, 0.3
PAIRS = (3, 7)  # valid pairs on rank 0 and rank 1
BUCKETS = (8, 16)  # different pair buckets, as two ranks' batches may have


def rank_inputs(rank):
    """Rank r's hidden states [2n, D] (Preds then targets) and its padded index tensors."""
    n, bucket = PAIRS[rank], BUCKETS[rank]
    hidden = torch.randn(2 * n, DIM, generator=torch.Generator().manual_seed(rank + 1))
    pad = bucket - n
    pred_idx = torch.tensor(list(range(n)) + [0] * pad)
    tgt_idx = torch.tensor(list(range(n, 2 * n)) + [0] * pad)
    mask = torch.tensor([1.0] * n + [0.0] * pad)
    return hidden, pred_idx, tgt_idx, mask


def _worker(rank, out_dir):
    hidden, pred_idx, tgt_idx, mask = rank_inputs(rank)
    hidden.requires_grad_()
    loss, *_ = jepa_terms(hidden, pred_idx, tgt_idx, mask, "infonce", TEMPERATURE, gather_across_ranks)
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": hidden.grad}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_infonce_negatives_and_gradients_span_ranks(tmp_path):
    run_gloo_ranks(_worker, 2, str(tmp_path))
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    leaves = [rank_inputs(r)[0].requires_grad_() for r in range(2)]
    preds = torch.cat([h[:n] for h, n in zip(leaves, PAIRS)])
    targets = torch.cat([h[n:] for h, n in zip(leaves, PAIRS)])
    logits = F.normalize(preds, dim=-1) @ F.normalize(targets, dim=-1).T / TEMPERATURE
    reference = F.cross_entropy(logits, torch.arange(len(preds)), reduction="sum")
    reference.backward()

    assert torch.allclose(results[0]["loss"] + results[1]["loss"], reference.detach(), atol=1e-5)
    for r in range(2):
        assert torch.allclose(results[r]["grad"], leaves[r].grad, atol=1e-6), f"rank {r}"
    # with only local negatives the loss would be smaller: the gather really added the other rank's
    local = sum(jepa_terms(*rank_inputs(r), "infonce", TEMPERATURE)[0] for r in range(2))
    assert local < reference - 0.1
