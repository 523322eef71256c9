"""The packed-row attention rule, written once, materialised as a dense SDPA mask or a FlexAttention
BlockMask.

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

import torch


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
    return dense_mask(seg, ctx_seg, ctx_end, sliding_window)
