"""Model FLOPs from the architecture, attention counted over the actual block-sparse mask.

Matmuls only (PaLM's convention: norms, RoPE and activations are left out). A forward costs
2 FLOPs per multiply-accumulate: 2 * (matmul parameters) per token, plus QK^T and AV, each
2 * n_heads * head_dim per attended (query, key) pair. Training = 3x forward (backward is twice the
forward); activation-checkpointing recompute is not model FLOPs, so MFU does not count it.
"""
from __future__ import annotations

import torch

from megajepa.model.architecture import ModelArchitecture

# Dense bf16 tensor-core peak, TFLOP/s, per GPU (vendor datasheets; no sparsity). First match wins.
PEAK_TFLOPS_BF16 = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0),
    ("B200", 2250.0), ("B100", 1750.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
    ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("V100", 125.0),
    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("MI300X", 1307.0), ("MI250X", 383.0),
)


def matmul_params(cfg: ModelArchitecture) -> int:
    """Weights that multiply every token: all projections plus the output head (not the lookup)."""
    hd = cfg.dim // cfg.n_heads
    attn = cfg.dim * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    mlp = 3 * cfg.dim * cfg.ffn_dim
    return cfg.n_layers * (attn + mlp) + cfg.vocab_size * cfg.dim


def forward_flops(cfg: ModelArchitecture, tokens: int, attended_pairs: int) -> int:
    """Forward FLOPs for `tokens` tokens whose queries attend `attended_pairs` (query, key) pairs."""
    attention = 4 * cfg.n_layers * cfg.n_heads * (cfg.dim // cfg.n_heads) * attended_pairs
    return 2 * matmul_params(cfg) * tokens + attention


def train_flops(cfg: ModelArchitecture, tokens: int, attended_pairs: int) -> int:
    return 3 * forward_flops(cfg, tokens, attended_pairs)


def attended_pairs(seg: torch.Tensor, ctx_seg: torch.Tensor, ctx_end: torch.Tensor) -> int:
    """Allowed (query, key) pairs of attention.mask_rule over real (non-padding) queries, in O(B*T).

    Relies on the packer's layout: every segment is one contiguous run of its row. Equals
    `dense_mask(...)[seg >= 0].sum()` (tested), without building the [T, T] mask.
    """
    b, t = seg.shape
    idx = torch.arange(t).expand(b, t)
    width = int(seg.max()) + 2 if seg.numel() else 1  # segment ids (and -1 padding) per row, shifted
    gid = seg + 1 + width * torch.arange(b)[:, None]  # ids unique across the batch
    first = torch.full((b * width,), t, dtype=torch.long).scatter_reduce(0, gid.reshape(-1), idx.reshape(-1), "amin")
    size = torch.bincount(gid.reshape(-1), minlength=b * width)
    own = idx - first[gid] + 1  # causal keys of the query's own segment
    has_ctx = ctx_seg >= 0
    ctx_gid = torch.where(has_ctx, ctx_seg + 1 + width * torch.arange(b)[:, None], 0)
    ctx_start = first[ctx_gid]
    ctx_stop = torch.minimum(torch.minimum(ctx_end, idx + 1), ctx_start + size[ctx_gid])
    ctx = torch.where(has_ctx, (ctx_stop - ctx_start).clamp_min(0), 0)
    return int(((own + ctx) * (seg >= 0)).sum())


def batch_train_flops(cfg: ModelArchitecture, batch: dict[str, torch.Tensor]) -> int:
    """Model FLOPs of one training micro-batch (host-side tensors: no device sync)."""
    tokens = int((batch["seg"] >= 0).sum())
    return train_flops(cfg, tokens, attended_pairs(batch["seg"], batch["ctx_seg"], batch["ctx_end"]))


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one accelerator from the table; None on CPU or an unknown GPU (no MFU then)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS_BF16:
        if key in name:
            return tflops * 1e12
    return None


def throughput_scalars(flops: float, seconds: float, device: torch.device, world: int) -> dict[str, float]:
    """Achieved rate per device: GFLOP/s on CPU; TFLOP/s and MFU on a GPU with a known peak."""
    rate = flops / max(seconds, 1e-9) / max(world, 1)
    if device.type != "cuda":
        return {"throughput/gflops": rate / 1e9}
    out = {"throughput/tflops": rate / 1e12}
    peak = peak_flops(device)
    if peak:
        out["throughput/mfu"] = rate / peak
    return out
