"""Every objective layout (issue 3) packed equals separate passes.

For each variant (k = 0..10, predictors in front, reverse, N views chain/all, train_all, chat prompt,
embed_at end/last, loss dropout) the packed row must give, at every Pred and Enc position, the
hidden state of a separate forward pass over the sequence the paper defines, and the packed loss
(HybridObjective, the training path) must equal, with the same gradients, a straightforward
unpacked implementation: one forward per stream, per Pred sequence, per Enc sequence.
The expected sequences below are written from the definition, not from the packer.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SPECIALS as SP
from helpers import random_views, tiny_model

from megajepa.config import JepaConfig
from megajepa.data.collate import collate
from megajepa.data.packing import IGNORE, LayoutConfig, build_unit, place
from megajepa.model.attention import BlockDiagonal, dense_mask
from megajepa.objective.hybrid import HybridObjective

LAYOUTS = {  # name: (LayoutConfig fields, views per example, with prompt)
    **{f"k{k}": (dict(predictors=k), 2, False) for k in range(11)},  # k1 is the default layout
    "k10_last": (dict(predictors=10, embed_at="last"), 2, False),
    "front": (dict(predictors=2, pred_position="front"), 2, False),
    "front_last": (dict(predictors=3, pred_position="front", embed_at="last"), 2, False),
    "reverse": (dict(predictors=2, reverse=True), 2, False),
    "reverse_k0_last": (dict(predictors=0, reverse=True, embed_at="last"), 2, False),
    "chain4": (dict(predictors=2), 4, False),
    "all3": (dict(predictors=1, pairs="all"), 3, False),
    "chain4_reverse": (dict(predictors=1, reverse=True), 4, False),
    "train_all_chain": (dict(predictors=2, train_all=True), 3, False),
    "train_all_all_k0": (dict(predictors=0, train_all=True, pairs="all"), 3, False),
    "train_all_front": (dict(predictors=2, train_all=True, pred_position="front"), 2, False),
    "chat": (dict(predictors=2), 2, True),
    "chat_reverse_last": (dict(predictors=1, reverse=True, embed_at="last"), 2, True),
    "chat_chain3_k0": (dict(predictors=0), 3, True),
}


# ---------------------------------------------------------------- the reference, from the definition
def directed_pairs(n, layout):
    pairs = [(i, i + 1) for i in range(n - 1)] if layout.pairs == "chain" else \
        [(i, j) for i in range(n) for j in range(n) if i != j]
    return [(j, i) for i, j in pairs] if layout.reverse else pairs


def marker(i, n, layout):
    if layout.embed_at == "last":
        return []
    return [SP.eos] if layout.train_all or i == n - 1 else [SP.sep]


def enc_sequence(views, i, layout):
    """Enc(v_i): v_i encoded on its own; the embedding is the last token."""
    return [SP.bos] + views[i] + marker(i, len(views), layout)


def pred_sequence(views, i, layout):
    """Pred(Enc(v_i)): k predictors after (or, front, before) the view; the last token predicts."""
    preds = SP.predictors[:layout.predictors]
    if layout.pred_position == "front" and preds:
        return [SP.bos] + preds + views[i] + marker(i, len(views), layout)
    return enc_sequence(views, i, layout) + preds


def streams(views, layout, prompt):
    """(tokens, first labelled target index) per NTP stream."""
    if layout.train_all:
        return [([SP.bos] + v + [SP.eos], 1) for v in views]
    tokens = [SP.bos] + (prompt + [SP.sep] if prompt else [])
    for v in views[:-1]:
        tokens += v + [SP.sep]
    answer = len(tokens)
    return [(tokens + views[-1] + [SP.eos], answer)]


def separate_hidden(model, tokens):
    ids = torch.tensor([tokens])
    seg = torch.zeros_like(ids)
    return model(ids, torch.arange(len(tokens))[None], dense_mask(seg, seg - 1, seg))[0]


def distance(pred, target, name, temperature):
    if name == "cosine":
        return 1 - F.cosine_similarity(pred, target, dim=-1)
    if name == "l2":
        return (pred - target).norm(dim=-1)
    if name == "mse":
        return ((pred - target) ** 2).mean(-1)
    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(pred)), reduction="none")


def unpacked_loss(model, examples, layout, jepa):
    """gamma * NTP sum + lambda * JEPA distance sum, one forward per sequence."""
    ntp, preds, targets = 0.0, [], []
    for views, prompt in examples:
        for tokens, answer in streams(views, layout, prompt):
            h = separate_hidden(model, tokens)
            ntp = ntp + F.cross_entropy(model.lm_head(h[answer - 1:-1]), torch.tensor(tokens[answer:]),
                                        reduction="sum")
        for s, t in directed_pairs(len(views), layout):
            preds.append(separate_hidden(model, pred_sequence(views, s, layout))[-1])
            targets.append(separate_hidden(model, enc_sequence(views, t, layout))[-1])
    d = distance(torch.stack(preds), torch.stack(targets), jepa.distance, jepa.temperature)
    return jepa.gamma * ntp + jepa.lam * d.sum()


# ---------------------------------------------------------------- the packed side
def make_examples(name, seed, n_examples=4):
    fields, n_views, with_prompt = LAYOUTS[name]
    rng = np.random.default_rng(seed)
    examples = [(random_views(rng, n_views), random_views(rng, 1)[0] if with_prompt else None)
                for _ in range(n_examples)]
    return LayoutConfig(**fields), examples


def pack_one_row(examples, layout, with_jepa=None):
    with_jepa = with_jepa or [True] * len(examples)
    units = [build_unit(v, SP, layout, with_jepa=w, prompt=p) for (v, p), w in zip(examples, with_jepa)]
    rows = place(units, sum(u.n_tokens for u in units) + 3, SP)
    assert len(rows) == 1
    return collate(rows)


def assert_pairs_equal_separate(model, batch, examples, layout):
    """Every (Pred, Enc) pair in the packed batch equals separate passes, in example and pair order."""
    expected = [(pred_sequence(v, s, layout), enc_sequence(v, t, layout))
                for v, _ in examples for s, t in directed_pairs(len(v), layout)]
    assert int(batch["pair_mask"].sum()) == len(expected)
    for mask_type in (dense_mask, BlockDiagonal):  # the dense mask and the CPU training path's blocks
        with torch.no_grad():
            mask = mask_type(batch["seg"], batch["ctx_seg"], batch["ctx_end"])
            flat = model(batch["input_ids"], batch["position_ids"], mask).reshape(-1, model.config.dim)
            for i, (pred_seq, enc_seq) in enumerate(expected):
                assert (flat[batch["pred_idx"][i]] - separate_hidden(model, pred_seq)[-1]).abs().max() < 1e-5
                assert (flat[batch["tgt_idx"][i]] - separate_hidden(model, enc_seq)[-1]).abs().max() < 1e-5


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_pred_and_enc_equals_a_separate_pass(name):
    layout, examples = make_examples(name, seed=len(name))
    model = tiny_model(seed=1)
    batch = pack_one_row(examples, layout)
    assert_pairs_equal_separate(model, batch, examples, layout)
    # token floor: streams + predictor blocks + only the copies the layout cannot reuse
    n_stream = sum(len(t) for v, p in examples for t, _ in streams(v, layout, p))
    assert batch["labels"].ne(IGNORE).sum() == sum(len(t) - a for v, p in examples for t, a in streams(v, layout, p))
    assert int((batch["seg"] >= 0).sum()) <= n_stream + sum(
        len(pred_sequence(v, s, layout)) + len(enc_sequence(v, t, layout))
        for v, _ in examples for s, t in directed_pairs(len(v), layout))


def test_token_floor_of_the_default_and_pretraining_layouts():
    """Default: |stream| + k + |Code copy|; train_all: only streams + predictor blocks, no copies."""
    views = [[20, 21, 22], [30, 31], [40]]
    unit = build_unit(views[:2], SP, LayoutConfig(predictors=3))
    assert unit.n_tokens == (1 + 3 + 1 + 2 + 1) + 3 + (1 + 2 + 1)
    unit = build_unit(views, SP, LayoutConfig(predictors=2, train_all=True))
    assert unit.n_tokens == sum(len(v) + 2 for v in views) + 2 * 2  # two sources in a 3-chain
    assert build_unit(views[:2], SP, LayoutConfig(predictors=2), with_jepa=False).n_tokens == 1 + 3 + 1 + 2 + 1


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_unit_without_its_jepa_segments_is_the_unit_built_without_jepa(name):
    """PackedEpochs builds each unit once and takes without_jepa() for an epoch that drops its views: that
    must be exactly what build_unit(with_jepa=False) makes, for every layout, with and without data.views."""
    layout, examples = make_examples(name, seed=11 + len(name))
    rng = np.random.default_rng(5)
    for views, prompt in examples:
        for jepa_views in (None, random_views(rng, 3)):
            full = build_unit(views, SP, layout, prompt=prompt, jepa_views=jepa_views)
            alone = build_unit(views, SP, layout, with_jepa=False, prompt=prompt, jepa_views=jepa_views)
            assert full.without_jepa() == alone
            if jepa_views is not None:  # data.views always adds copies: there was something to drop
                assert len(full.segments) > len(alone.segments)


GRADIENT_CASES = [(name, "cosine") for name in ("k1", "front", "reverse_k0_last", "all3",
                                                "train_all_chain", "chat")] + \
                 [("k1", "l2"), ("chain4", "mse"), ("k3", "infonce"), ("train_all_all_k0", "infonce")]


@pytest.mark.parametrize("name,dist", GRADIENT_CASES)
def test_packed_loss_and_gradients_equal_unpacked(name, dist):
    layout, examples = make_examples(name, seed=3 + len(name))
    jepa = JepaConfig.paper(lam=0.7, gamma=1.3, distance=dist, temperature=0.5, predictors=layout.predictors)
    packed_model, reference_model = tiny_model(seed=2), tiny_model(seed=2)
    one = torch.tensor(1.0)
    loss, _ = HybridObjective(packed_model, jepa)(pack_one_row(examples, layout), one, one)
    expected = unpacked_loss(reference_model, examples, layout, jepa)
    loss.backward()
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-4 * max(1.0, abs(expected.item()))
    for (pname, p), q in zip(packed_model.named_parameters(), reference_model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=2e-5, rtol=1e-4), pname


def test_dropped_examples_pack_only_their_streams():
    """Loss dropout: a dropped example costs its NTP tokens and nothing else; kept ones are unchanged."""
    layout, examples = make_examples("chain4", seed=9)
    keep = [True, False, True, False]
    model = tiny_model(seed=4)
    batch = pack_one_row(examples, layout, keep)
    kept = [ex for ex, k in zip(examples, keep) if k]
    n_tokens = sum(build_unit(v, SP, layout, with_jepa=k).n_tokens for (v, _), k in zip(examples, keep))
    assert int((batch["seg"] >= 0).sum()) == n_tokens
    assert_pairs_equal_separate(model, batch, kept, layout)
