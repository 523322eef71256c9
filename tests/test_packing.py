"""Packed-equals-separate: the core equivalence of the project.

A packed row holding many examples' streams, predictor blocks and copies must give, at every Pred and
Enc position, the hidden states of separate forward passes over `bos Text [sep] preds` and
`bos Code [eos]`; stream logits must equal an unpacked forward; and the packed loss must have the
gradient of the same loss computed from those separate passes.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SPECIALS, random_packed_batch, random_views, tiny_model

from megajepa.data.collate import collate
from megajepa.data.packing import IGNORE, LayoutConfig, build_unit, place
from megajepa.model.attention import BlockDiagonal, dense_mask
from megajepa.objective.losses import ntp_loss

SP = SPECIALS


def separate_hidden(model, tokens: list[int]) -> torch.Tensor:
    """One sequence on its own: positions from 0, plain causal attention."""
    ids = torch.tensor([tokens])
    seg = torch.zeros_like(ids)
    return model(ids, torch.arange(len(tokens))[None], dense_mask(seg, seg - 1, seg))[0]


def packed_hidden(model, rows):
    batch = collate(rows)
    mask = dense_mask(batch["seg"], batch["ctx_seg"], batch["ctx_end"])
    return model(batch["input_ids"], batch["position_ids"], mask), batch


def one_row(views_list, layout, seq_len=None):
    units = [build_unit(v, SP, layout) for v in views_list]
    total = sum(u.n_tokens for u in units)
    rows = place(units, seq_len or total + 5, SP)
    assert len(rows) == 1 and rows[0].n_units == len(units)
    return rows


def expected_sequences(views, layout):
    """The separate passes the packed row must reproduce (written from the paper, not the packer)."""
    text, code = views
    marker = [SP.sep] if layout.embed_at == "end" else []
    pred_seq = [SP.bos] + text + marker + SP.predictors[:layout.predictors]
    code_seq = [SP.bos] + code + ([SP.eos] if layout.embed_at == "end" else [])
    stream = [SP.bos] + text + [SP.sep] + code + [SP.eos]
    return pred_seq, code_seq, stream


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("embed_at", ["end", "last"])
def test_pred_and_enc_equal_separate_passes(k, embed_at):
    rng = np.random.default_rng(k * 10 + len(embed_at))
    layout = LayoutConfig(predictors=k, embed_at=embed_at)
    model = tiny_model(seed=3)
    views_list = [random_views(rng) for _ in range(6)]
    rows = one_row(views_list, layout)
    with torch.no_grad():
        hidden, batch = packed_hidden(model, rows)
        flat = hidden.reshape(-1, hidden.shape[-1])
        for i, views in enumerate(views_list):
            pred_seq, code_seq, _ = expected_sequences(views, layout)
            pred_ref = separate_hidden(model, pred_seq)[-1]
            code_ref = separate_hidden(model, code_seq)[-1]
            assert (flat[batch["pred_idx"][i]] - pred_ref).abs().max() < 1e-5
            assert (flat[batch["tgt_idx"][i]] - code_ref).abs().max() < 1e-5
        assert batch["pair_mask"].sum() == len(views_list)


def test_stream_logits_equal_unpacked_forward():
    rng = np.random.default_rng(7)
    layout = LayoutConfig(predictors=2)
    model = tiny_model(seed=4)
    views_list = [random_views(rng) for _ in range(5)]
    rows = one_row(views_list, layout)
    with torch.no_grad():
        hidden, batch = packed_hidden(model, rows)
        logits = model.lm_head(hidden[0])
        start = 0
        for unit_views in views_list:
            _, _, stream = expected_sequences(unit_views, layout)
            ref = model.lm_head(separate_hidden(model, stream))
            got = logits[start:start + len(stream)]
            assert torch.equal(batch["input_ids"][0, start:start + len(stream)], torch.tensor(stream))
            assert (got - ref).abs().max() < 1e-4
            start += build_unit(unit_views, SP, layout).n_tokens


def test_labels_cover_code_and_eos_only_by_default():
    views = [[20, 21, 22], [30, 31]]
    unit = build_unit(views, SP, LayoutConfig(predictors=2))
    stream, preds, copy = unit.segments
    # stream: bos 20 21 22 sep 30 31 eos -> targets 30 31 eos at the positions before them
    assert stream.labels == [IGNORE, IGNORE, IGNORE, IGNORE, 30, 31, SP.eos, IGNORE]
    assert all(l == IGNORE for l in preds.labels + copy.labels)
    # train_all (pretraining, issue 3): every view is its own `bos v eos` stream, labelled everywhere
    own = build_unit(views, SP, LayoutConfig(predictors=2, train_all=True)).segments[:2]
    for view, segment in zip(views, own):
        assert segment.tokens == [SP.bos] + view + [SP.eos]
        assert segment.labels == view + [SP.eos, IGNORE]


def test_rows_pack_many_examples_without_waste():
    rng = np.random.default_rng(0)
    layout = LayoutConfig(predictors=1)
    units = [build_unit(random_views(rng), SP, layout) for _ in range(200)]
    rows = place(units, 128, SP)
    real = sum(r.n_real for r in rows)
    assert real == sum(u.n_tokens for u in units)
    assert sum(r.n_units for r in rows) == 200
    # Padding is only what no remaining unit could fill: far below one unit per row on average.
    assert (len(rows) * 128 - real) / len(rows) < min(u.n_tokens for u in units) + 8
    # every unit keeps its segments in one row: pairs point inside their row
    for r in rows:
        for p, t in r.pairs:
            assert r.seg[p] >= 0 and r.seg[t] >= 0


def _packed_loss(model, rows):
    hidden, batch = packed_hidden(model, rows)
    flat = hidden.reshape(-1, hidden.shape[-1])
    ntp = F.cross_entropy(model.lm_head(flat), batch["labels"].reshape(-1), ignore_index=IGNORE, reduction="sum")
    pred, tgt = flat[batch["pred_idx"]], flat[batch["tgt_idx"]]
    jepa = ((1 - F.cosine_similarity(pred, tgt, dim=-1)) * batch["pair_mask"]).sum()
    return ntp + jepa


def _separate_loss(model, views_list, layout):
    total = 0.0
    for views in views_list:
        pred_seq, code_seq, stream = expected_sequences(views, layout)
        h = separate_hidden(model, stream)
        answer_start = len(views[0]) + 2
        targets = torch.tensor(stream[answer_start:])
        total = total + F.cross_entropy(model.lm_head(h[answer_start - 1:-1]), targets, reduction="sum")
        pred = separate_hidden(model, pred_seq)[-1]
        code = separate_hidden(model, code_seq)[-1]
        total = total + (1 - F.cosine_similarity(pred, code, dim=0))
    return total


def test_packed_loss_gradient_equals_separate_passes():
    rng = np.random.default_rng(11)
    layout = LayoutConfig(predictors=2)
    views_list = [random_views(rng) for _ in range(4)]
    packed_model, separate_model = tiny_model(seed=5), tiny_model(seed=5)
    loss_packed = _packed_loss(packed_model, one_row(views_list, layout))
    loss_separate = _separate_loss(separate_model, views_list, layout)
    loss_packed.backward()
    loss_separate.backward()
    assert abs(loss_packed.item() - loss_separate.item()) < 1e-4
    for (name, p), q in zip(packed_model.named_parameters(), separate_model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name


def test_fused_ntp_equals_materialised_logits():
    model = tiny_model(seed=6)
    hidden = torch.randn(2, 9, 64, requires_grad=True)
    labels = torch.randint(0, 96, (2, 9))
    labels[0, :3] = IGNORE
    fused = model.lm_head(hidden, ntp_loss(labels))
    ref = F.cross_entropy(model.lm_head(hidden).reshape(-1, 96), labels.reshape(-1), reduction="sum")
    g1 = torch.autograd.grad(fused, hidden)[0]
    g2 = torch.autograd.grad(ref, hidden)[0]
    assert torch.allclose(fused, ref, atol=1e-5) and torch.allclose(g1, g2, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 8, 9, 100, 129, 700, 1024])
def test_ntp_index_holds_exactly_the_labelled_positions(n):
    """The output head runs on ntp_idx rows only: every labelled position once, padding ignored."""
    from megajepa.data.collate import add_ntp_index

    labels = torch.full((4, 256), IGNORE)
    where = torch.randperm(1024, generator=torch.Generator().manual_seed(n))[:n]
    labels.view(-1)[where] = torch.arange(n) % 50
    batch = add_ntp_index({"labels": labels})
    idx, lab = batch["ntp_idx"], batch["ntp_labels"]
    real = lab != IGNORE
    assert sorted(idx[real].tolist()) == sorted(where.tolist())
    assert torch.equal(lab[real], labels.view(-1)[idx[real]])
    assert len(idx) <= min(1024, max(8, n + n // 8 + 8))  # bounded padding, never past B * T


@pytest.mark.parametrize("seed,window,block", [(0, None, 128), (1, None, 16), (2, 24, 32), (3, None, 4096)])
def test_block_diagonal_attention_equals_the_dense_mask(seed, window, block):
    """The CPU training path (whole units in blocks, no [T, T] mask) gives the dense path's outputs and
    gradients; small blocks force many blocks, a huge one a single block per batch."""
    model = tiny_model(seed, sliding_window=window)
    batch = random_packed_batch(seed, seq_len=96, n=20)
    out = {}
    for name, mask in (("dense", dense_mask(batch["seg"], batch["ctx_seg"], batch["ctx_end"], window)),
                       ("blocks", BlockDiagonal(batch["seg"], batch["ctx_seg"], batch["ctx_end"], window, block))):
        model.zero_grad()
        hidden = model(batch["input_ids"], batch["position_ids"], mask)
        (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum().backward()
        out[name] = (hidden.detach(), [p.grad.clone() for p in model.parameters()])
    assert (out["blocks"][0] - out["dense"][0]).abs().max() < 1e-5
    for g_blocks, g_dense in zip(out["blocks"][1], out["dense"][1]):
        assert (g_blocks - g_dense).abs().max() < 1e-5 * max(1.0, g_dense.abs().max())


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_block_attention_in_bf16_equals_float32_sdpa(kv_heads):
    """bf16 on CPU takes the written-out attention (float32 softmax): outputs and input gradients equal
    float32 SDPA on the same bf16 values within bf16 rounding; grouped-query heads included."""
    from megajepa.model.attention import block_attention

    g = torch.Generator().manual_seed(kv_heads)
    q = torch.randn(3, 4, 40, 16, generator=g).bfloat16().requires_grad_()
    k, v = (torch.randn(3, kv_heads, 40, 16, generator=g).bfloat16().requires_grad_() for _ in range(2))
    mask = (torch.rand(3, 1, 40, 40, generator=g) < 0.4) | torch.eye(40, dtype=torch.bool)  # no empty row
    grad_out = torch.randn(3, 4, 40, 16, generator=g)
    out = block_attention(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float(), (q, k, v), grad_out)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, enable_gqa=kv_heads != 4)
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), grad_out)
    assert (out.float() - ref).abs().max() < 2e-2
    for got, want in zip(grads, ref_grads):
        assert (got.float() - want).abs().max() < 3e-2 * max(1.0, want.abs().max())


def test_block_attention_under_bf16_autocast_takes_the_bf16_path():
    """Under CPU autocast (train.bf16, the Trainer's bf16) float32 q/k/v are attended in bf16, as SDPA
    would autocast them: the same output as bf16 inputs outside autocast, within bf16 rounding of fp32."""
    from megajepa.model.attention import block_attention

    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 4, 24, 8, generator=g) for _ in range(3))
    mask = (torch.rand(2, 1, 24, 24, generator=g) < 0.5) | torch.eye(24, dtype=torch.bool)
    with torch.autocast("cpu", torch.bfloat16):
        mixed = block_attention(q, k, v, mask)
    plain = block_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert mixed.dtype == torch.bfloat16 and torch.equal(mixed, plain)
    assert (mixed.float() - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max() < 3e-2
