"""The packed-row attention rule, written once, materialised as a dense SDPA mask (generation, tests),
small per-block masks over whole units (CPU training) or a FlexAttention BlockMask (CUDA training).

Per-token metadata (all [B, T] int tensors, produced by the packer):
  seg      segment id, unique within a row: an NTP stream, a predictor block or an isolated copy;
           padding has seg = -1.
  ctx_seg  the one other segment a token may read (a predictor block reads the view it predicts
           from); -1 for none.
  ctx_end  row index one past the last readable token of ctx_seg (the prefix limit: `bos Text sep`
           of a stream whose Code follows).
Position ids are not part of the rule; RoPE takes them separately.

Rule: query q may attend key k  iff  k <= q  and  (seg[k] == seg[q]  or  (seg[k] == ctx_seg[q] and
k < ctx_end[q])).  Padding (seg -1) only sees padding, so no query row is ever empty.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def mask_rule(seg_q, seg_k, ctx_seg_q, ctx_end_q, q_idx, k_idx, sliding_window: int | None = None):
    """Elementwise rule on broadcastable tensors; shared by the dense and the FlexAttention paths."""
    allowed = (k_idx <= q_idx) & ((seg_k == seg_q) | ((seg_k == ctx_seg_q) & (k_idx < ctx_end_q)))
    if sliding_window is not None:
        allowed = allowed & (q_idx - k_idx < sliding_window)
    return allowed


def dense_mask(seg: torch.Tensor, ctx_seg: torch.Tensor, ctx_end: torch.Tensor,
               sliding_window: int | None = None) -> torch.Tensor:
    """Boolean [B, 1, T, T] mask (True = attend) for scaled_dot_product_attention."""
    t = seg.shape[1]
    idx = torch.arange(t, device=seg.device)
    allowed = mask_rule(seg[:, :, None], seg[:, None, :], ctx_seg[:, :, None], ctx_end[:, :, None],
                        idx[None, :, None], idx[None, None, :], sliding_window)
    return allowed[:, None]


class BlockDiagonal:
    """The same rule without a dense [T, T] mask (CPU training path): the batch, flattened to one
    sequence of B*T tokens, is cut where no later query reads an earlier key (whole units; every row
    end is such a cut), the pieces grouped greedily into blocks of at most `block` tokens (or the
    longest piece), and attention runs as one SDPA over the stacked blocks with their small masks."""

    def __init__(self, seg, ctx_seg, ctx_end, sliding_window: int | None = None, block: int = 128):
        b, t = seg.shape
        offset = torch.arange(b, device=seg.device)[:, None] * t
        # segment ids unique over the whole batch (padding: one per row), indices into the flat sequence
        gseg = torch.where(seg >= 0, seg + offset, -1 - offset // t).flatten()
        gctx = torch.where(ctx_seg >= 0, ctx_seg + offset, -b - 1).flatten()
        gend = (ctx_end + offset).flatten()
        pos = torch.arange(b * t, device=seg.device)
        ids = gseg + b + 1  # >= 0; ctx -b-1 maps to 0, which no segment has
        start = torch.full((int(ids.max()) + 1,), b * t, device=seg.device).scatter_reduce(0, ids, pos, "amin")
        earliest = torch.minimum(start[ids], torch.where(gctx >= 0, start[(gctx + b + 1).clamp_min(0)], pos))
        suffix_min = earliest.flip(0).cummin(0).values.flip(0)
        cuts = (pos[suffix_min == pos]).tolist() + [b * t]  # suffix_min[0] == 0: position 0 is a cut
        size = max(block, max(e - s for s, e in itertools.pairwise(cuts)))
        blocks, first = [], 0
        for s, e in itertools.pairwise(cuts):  # piece [s, e) closes the current block if it does not fit
            if e - first > size:
                blocks.append((first, s))
                first = s
        blocks.append((first, b * t))
        n = len(blocks)
        local = torch.arange(size, device=seg.device)
        starts = torch.tensor([s for s, _ in blocks], device=seg.device)
        lengths = torch.tensor([e - s for s, e in blocks], device=seg.device)
        valid = local[None] < lengths[:, None]  # [n, size]
        self.index = torch.where(valid, starts[:, None] + local[None], 0).flatten()  # block slot -> flat
        self.inverse = torch.nonzero(valid.flatten()).squeeze(1)  # flat position -> block slot (in order)
        i = self.index.view(n, size)
        allowed = mask_rule(gseg[i][:, :, None], gseg[i][:, None, :], gctx[i][:, :, None], gend[i][:, :, None],
                            i[:, :, None], i[:, None, :], sliding_window)
        eye = torch.eye(size, dtype=torch.bool, device=seg.device)
        # empty slots attend only to themselves (no empty softmax row); their outputs are dropped
        self.mask = torch.where(valid[:, :, None] & valid[:, None, :], allowed, eye & ~valid[:, :, None])[:, None]
        self.shape = (b, t, n, size)

    def attend(self, q, k, v):
        b, t, n, size = self.shape

        def to_blocks(x):  # [B, H, T, D] -> [n, H, size, D]
            h, d = x.shape[1], x.shape[3]
            flat = x.transpose(0, 1).reshape(h, b * t, d).index_select(1, self.index)
            return flat.view(h, n, size, d).transpose(0, 1)

        out = block_attention(to_blocks(q), to_blocks(k), to_blocks(v), self.mask)
        h, d = out.shape[1], out.shape[3]
        out = out.transpose(0, 1).reshape(h, n * size, d).index_select(1, self.inverse)
        return out.view(h, b, t, d).transpose(0, 1)


def block_attention(q, k, v, mask):
    """SDPA over [n, H, size, D] blocks; in bf16/fp16 on CPU the same attention written out: matmuls in the
    low dtype, the masked softmax in float32 (as transformers' eager attention), 2-2.5x faster than SDPA's
    CPU flash kernel at these block sizes (benchmarks/throughput.py --dtype bf16)."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype  # SDPA autocasts
    if q.device.type != "cpu" or dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
    q, k, v = (x.to(dtype) for x in (q, k, v))
    if q.shape[1] != k.shape[1]:  # grouped-query: each KV head serves n_heads / n_kv_heads query heads
        k, v = (x.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for x in (k, v))
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(q.dtype)
    return torch.matmul(weights, v)


def block_mask(seg: torch.Tensor, ctx_seg: torch.Tensor, ctx_end: torch.Tensor,
               sliding_window: int | None = None, block_size: int = 128):
    """FlexAttention BlockMask from the same rule (CUDA training path); built once per batch."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, k_idx):
        return mask_rule(seg[b, q_idx], seg[b, k_idx], ctx_seg[b, q_idx], ctx_end[b, q_idx], q_idx, k_idx,
                         sliding_window)

    b, t = seg.shape
    return create_block_mask(mask_mod, b, None, t, t, device=seg.device, BLOCK_SIZE=block_size)


_compiled_flex = None


def flex_attend(q, k, v, block_mask):
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


def build_attention_mask(seg, ctx_seg, ctx_end, use_flex: bool, sliding_window: int | None = None):
    if use_flex:
        return block_mask(seg, ctx_seg, ctx_end, sliding_window)
    return BlockDiagonal(seg, ctx_seg, ctx_end, sliding_window)
