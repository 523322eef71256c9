"""The FlexAttention BlockMask (CUDA path) against the dense SDPA mask (CPU path): one rule, two
materialisations. Forward only: FlexAttention has no CPU backward. (~30 s: one CPU compile)"""
import pytest
import torch
import torch.nn.functional as F
from helpers import random_packed_batch, tiny_model
from torch.nn.attention.flex_attention import create_mask

from megajepa.model.attention import block_mask, dense_mask, flex_attend

BLOCK = 8  # small blocks so a short row has full, partial and empty blocks


def random_rows(seed: int, seq_len: int = 128):
    return random_packed_batch(seed, seq_len=seq_len, n=12, high=24)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_mask_equals_dense_mask(seed):
    batch = random_rows(seed)
    seg, ctx_seg, ctx_end = batch["seg"], batch["ctx_seg"], batch["ctx_end"]
    dense = dense_mask(seg, ctx_seg, ctx_end)
    bm = block_mask(seg, ctx_seg, ctx_end, block_size=BLOCK)
    b, t = seg.shape
    assert torch.equal(create_mask(bm.mask_mod, b, 1, t, t, device="cpu"), dense)
    # Block structure: a skipped block has no allowed pair; a "full" block (mask_mod skipped) is all True.
    blocks = dense[:, 0].reshape(b, t // BLOCK, BLOCK, t // BLOCK, BLOCK).transpose(2, 3)
    any_allowed, all_allowed = blocks.any((-1, -2)), blocks.all((-1, -2))
    visited = bm.to_dense()[:, 0].bool()  # partial or full blocks
    assert torch.equal(visited, any_allowed)
    full = torch.zeros_like(visited)
    for i in range(b):
        for q in range(t // BLOCK):
            n = int(bm.full_kv_num_blocks[i, 0, q])
            full[i, q, bm.full_kv_indices[i, 0, q, :n]] = True
    assert (all_allowed | ~full).all()
    assert full.any() and (~visited).any()  # the rows exercise skipped and full blocks


@pytest.mark.slow
def test_flex_attention_forward_equals_sdpa():
    batch = random_rows(3, seq_len=128)
    seg, ctx_seg, ctx_end = batch["seg"], batch["ctx_seg"], batch["ctx_end"]
    g = torch.Generator().manual_seed(0)
    b, t = seg.shape
    q = torch.randn(b, 4, t, 16, generator=g)
    k, v = torch.randn(2, b, 2, t, 16, generator=g)  # grouped-query: 4 query heads share 2 kv heads
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(seg, ctx_seg, ctx_end),
                                              enable_gqa=True)
    got = flex_attend(q, k, v, block_mask(seg, ctx_seg, ctx_end, block_size=32))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_model_forward_with_block_mask_equals_dense():
    """One BlockMask, built once, passed to every layer: hidden states equal the dense-mask forward
    (same shapes and block size as above, so the compiled kernel is reused)."""
    batch = random_rows(3, seq_len=128)
    model = tiny_model(seed=1)  # 4 heads of 16, 2 kv heads: the shapes of the test above
    meta = batch["seg"], batch["ctx_seg"], batch["ctx_end"]
    with torch.no_grad():
        dense = model(batch["input_ids"], batch["position_ids"], dense_mask(*meta))
        flex = model(batch["input_ids"], batch["position_ids"], block_mask(*meta, block_size=32))
    real = batch["seg"] >= 0
    torch.testing.assert_close(flex[real], dense[real], rtol=1e-5, atol=1e-5)
