"""The objective: L = gamma * NTP + lambda * d(Pred(Enc(Text)), Enc(Code)).

Both terms are returned as sums over their items (labelled tokens, JEPA pairs); the caller divides
by global counts so the loss is normalised over the whole optimizer step on every rank, with no
host sync (torchtitan's rule).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               reduction: str = "sum") -> torch.Tensor:
    """NTP through torch's chunked linear cross-entropy: the [N, vocab] logits are never kept."""
    h = hidden.reshape(-1, hidden.shape[-1])
    return F.linear_cross_entropy(h, weight.to(h.dtype), labels.reshape(-1), reduction=reduction,
                                  ignore_index=IGNORE, options=chunk_options(h, weight.shape[0]))


def ntp_loss(labels: torch.Tensor):
    """The NTP sum as the output head's `loss_fn`: it runs inside the head's forward (ZeRO-3 gathers the head)."""
    return lambda hidden, weight: fused_linear_cross_entropy(hidden, weight, labels)


CPU_CHUNK_LOGITS = 2**25  # logits elements per chunk on CPU (128 MB in float32)


def chunk_options(h: torch.Tensor, vocab: int) -> torch.nn.LinearCrossEntropyOptions:
    """torch's own chunk heuristic on GPUs; on CPU it picks ~8-64-token chunks whose skinny matmuls
    run 5-10x slower than unfused (benchmarks/throughput.py), so chunks there hold a fixed logits budget."""
    if h.device.type != "cpu":
        return torch.nn.LinearCrossEntropyOptions()
    rows = 1 << max(8, (CPU_CHUNK_LOGITS // max(vocab, 1)).bit_length() - 1)  # a power of two, >= 256
    return torch.nn.LinearCrossEntropyOptions(chunking_method=None, batch_chunk_size=min(rows, h.shape[0]))


def pair_distance(pred: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-pair distance [P] in float32 (cosine: 1 - cos; l2: Euclidean; mse: mean squared error)."""
    pred, target = pred.float(), target.float()
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)
    if distance == "l2":
        return (pred - target).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    if distance == "mse":
        return (pred - target).pow(2).mean(-1)
    raise ValueError(f"pair_distance: unknown distance {distance!r}")


def infonce(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, temperature: float,
            all_targets: torch.Tensor | None = None, all_mask: torch.Tensor | None = None,
            offset: int | torch.Tensor = 0) -> torch.Tensor:
    """Per-pair InfoNCE: each Pred's positive is its own target; negatives are every other (valid)
    target in `all_targets` (targets gathered from every data-parallel rank; local ones by default).
    `offset` is where this rank's targets start inside `all_targets`."""
    if all_targets is None:
        all_targets, all_mask = target, mask
    p = F.normalize(pred.float(), dim=-1)
    t = F.normalize(all_targets.float(), dim=-1)
    logits = p @ t.T / temperature
    logits = logits.masked_fill(all_mask[None, :] == 0, float("-inf"))
    # A padded Pred slot's row may be all -inf (no valid target anywhere): zero it so no NaN reaches backward.
    logits = torch.where(mask[:, None] > 0, logits, torch.zeros_like(logits))
    positives = torch.arange(pred.shape[0], device=pred.device) + offset
    return F.cross_entropy(logits, positives, reduction="none")


def gather_across_ranks(target: torch.Tensor, mask: torch.Tensor, group=None):
    """InfoNCE negatives from every data-parallel rank: (all targets, their mask, this rank's offset).

    Ranks may hold different pair buckets, so each pads to the largest (one small all-reduce). The
    gather is torch's autograd all_gather: each rank's targets receive the gradient of every rank's
    loss, so after the engine's gradient averaging the step follows the global InfoNCE loss."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_nn

    size = torch.tensor([target.shape[0]], device=target.device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX, group=group)
    size = int(size.item())  # host sync: the padded length must be known to allocate the gather
    pad = size - target.shape[0]
    target, mask = F.pad(target, (0, 0, 0, pad)), F.pad(mask, (0, pad))
    targets = dist_nn.all_gather(target, group=group)
    masks = [torch.empty_like(mask) for _ in targets]
    dist.all_gather(masks, mask.contiguous(), group=group)
    return torch.cat(targets), torch.cat(masks), dist.get_rank(group) * size


def gather_distance(hidden_flat: torch.Tensor, pred_idx: torch.Tensor, tgt_idx: torch.Tensor,
                    pair_mask: torch.Tensor, distance: str = "cosine", temperature: float = 0.07):
    """Gather + normalise + distance on this rank's pairs (the part train.compile fuses into one kernel
    set): (distance sum, cosine sum, pred, target)."""
    pred, target, mask = _gather(hidden_flat, pred_idx, tgt_idx, pair_mask)
    d = infonce(pred, target, mask, temperature) if distance == "infonce" else pair_distance(pred, target, distance)
    return _masked_sums(pred, target, d, mask)


def _gather(hidden_flat, pred_idx, tgt_idx, pair_mask):
    mask = pair_mask.to(hidden_flat.device, torch.float32)
    return hidden_flat.index_select(0, pred_idx), hidden_flat.index_select(0, tgt_idx), mask


def _masked_sums(pred, target, d, mask):
    d = torch.where(mask > 0, d, torch.zeros_like(d))  # padded slots may be inf for infonce
    cos = F.cosine_similarity(pred.detach().float(), target.detach().float(), dim=-1)
    return (d * mask).sum(), (cos * mask).sum(), pred, target


_compiled_gather_distance = None


def compiled_gather_distance(*args):
    """gather_distance under torch.compile; static shapes (pair counts are bucketed by the packer)."""
    global _compiled_gather_distance
    if _compiled_gather_distance is None:
        _compiled_gather_distance = torch.compile(gather_distance, dynamic=False)
    return _compiled_gather_distance(*args)


def jepa_terms(hidden_flat: torch.Tensor, pred_idx: torch.Tensor, tgt_idx: torch.Tensor,
               pair_mask: torch.Tensor, distance: str = "cosine", temperature: float = 0.07,
               gather_targets=None, compiled: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather Pred/target rows at index tensors (no host sync) and return (distance sum, cosine sum,
    pred embeddings, target embeddings). Padded pair slots carry mask 0."""
    if distance == "infonce" and gather_targets is not None:  # collectives stay eager
        pred, target, mask = _gather(hidden_flat, pred_idx, tgt_idx, pair_mask)
        all_targets, all_mask, offset = gather_targets(target, mask)
        d = infonce(pred, target, mask, temperature, all_targets, all_mask, offset)
        return _masked_sums(pred, target, d, mask)
    fn = compiled_gather_distance if compiled else gather_distance
    return fn(hidden_flat, pred_idx, tgt_idx, pair_mask, distance, temperature)
