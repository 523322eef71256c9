"""Batched greedy decoding with a KV cache for megajepa's Transformer.

Prompts of different lengths are left-padded into one batch: every row's next token then sits in the
same column, so one decode step appends one column for all rows. Each row keeps its own position ids
(0 at its first real token) and a dense boolean mask hides the padding columns from every query, so
a row's tokens are exactly what a batch of one would produce.
"""
from __future__ import annotations

from typing import Callable

import torch


class KVCache:
    """One layer's keys and values, preallocated [B, H_kv, capacity, head_dim]; `update` appends."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.k = self.v = None
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None:  # allocate on first use: shape, dtype and device come from the model
            b, h, _, d = k.shape
            self.k = k.new_empty(b, h, self.capacity, d)
            self.v = v.new_empty(b, h, self.capacity, d)
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} > capacity {self.capacity}")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


def _mask(starts: torch.Tensor, q_cols: torch.Tensor, n_keys: int, window: int | None) -> torch.Tensor:
    """[B, 1, Q, K] bool: causal over cache columns, padding columns (< start) hidden. A padding query
    may see itself so that no softmax row is empty (its output is never used)."""
    k_cols = torch.arange(n_keys, device=starts.device)
    causal = k_cols[None, None, :] <= q_cols[None, :, None]
    allowed = causal & (k_cols[None, None, :] >= starts[:, None, None])
    if window is not None:  # left padding shifts a row uniformly, so column gaps are position gaps
        allowed &= q_cols[None, :, None] - k_cols[None, None, :] < window
    allowed |= k_cols[None, None, :] == q_cols[None, :, None]
    return allowed[:, None]


@torch.no_grad()
def _generate_batch(model, prompts, max_new_tokens, eos_id, pad_id, all_done) -> list[list[int]]:
    device = next(model.parameters()).device
    b, width = len(prompts), max(len(p) for p in prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    starts = width - lengths
    ids = torch.full((b, width), pad_id, dtype=torch.long, device=device)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
    cols = torch.arange(width, device=device)
    positions = (cols[None, :] - starts[:, None]).clamp_min(0)
    window = model.config.sliding_window
    caches = [KVCache(width + max_new_tokens) for _ in model.layers]

    hidden = model(ids, positions, _mask(starts, cols, width, window), kv_caches=caches)
    out = [[] for _ in range(b)]
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        token = model.lm_head(hidden[:, -1]).argmax(-1)
        for row in (~finished).nonzero().flatten().tolist():
            if token[row].item() != eos_id:
                out[row].append(int(token[row]))
        finished |= token == eos_id
        local_done = bool(finished.all()) or step == max_new_tokens - 1
        if all_done(local_done) if all_done is not None else local_done:
            break
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        col = torch.tensor([width + step], device=device)
        hidden = model(token[:, None], (lengths + step)[:, None], _mask(starts, col, width + step + 1, window),
                       kv_caches=caches)
    return out


def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int = 0,
                    batch_size: int | None = None,
                    all_done: Callable[[bool], bool] | None = None) -> list[list[int]]:
    """Greedy continuations of each prompt (token ids), without the prompt and without the eos.

    `batch_size` bounds rows per forward (None: all at once). `all_done(local_done) -> bool` lets
    data-parallel ranks under ZeRO-3 decide together when to stop, since every rank must run the same
    number of forwards; callers must then also give every rank the same number of batches."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
    was_training = model.training
    model.eval()
    try:
        step = batch_size or max(len(prompts), 1)
        out = []
        for start in range(0, len(prompts), step):
            out += _generate_batch(model, prompts[start:start + step], max_new_tokens, eos_id, pad_id, all_done)
        return out
    finally:
        model.train(was_training)
