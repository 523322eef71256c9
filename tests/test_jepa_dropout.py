"""JEPA loss dropout (jepa.dropout = p): each example independently carries no JEPA views with
probability p, decided per epoch in PackedEpochs. The realised fraction matches p (that a dropped
example costs only its stream is in test_objective_layouts.py), and p = 1 is exactly the NTP-only objective (same rows, loss and gradients as
lambda = 0). ~10 s."""
import math

import numpy as np
import pytest
import torch
from helpers import SPECIALS, CharTokenizer, direct_keeps, random_views, tiny_model

from megajepa.config import JepaConfig
from megajepa.data.collate import collate
from megajepa.data.examples import Example
from megajepa.data.loader import PackedEpochs
from megajepa.data.packing import LayoutConfig
from megajepa.objective.hybrid import HybridObjective

LAYOUT = LayoutConfig(predictors=2)


def examples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Example(random_views(rng), f"test:{i}", i) for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
def test_realised_fraction_matches_p(p):
    exs = examples(3000)
    epochs = PackedEpochs(exs, SPECIALS, LAYOUT, seq_len=128, seed=5, jepa_dropout=p)
    dropped_sets = []
    for epoch in range(4):
        rows = epochs.rows(epoch)
        with_views = sum(len(r.pairs) for r in rows)  # two views: one pair per example that keeps JEPA
        dropped = 1 - with_views / len(exs)
        assert abs(dropped - p) < 4 * math.sqrt(p * (1 - p) / len(exs)), (epoch, dropped)
        dropped_sets.append(dropped)
    # decided per epoch: the realised fractions differ between epochs (independent draws)
    assert len(set(dropped_sets)) > 1


@pytest.mark.parametrize("distance", ["cosine", "infonce"])
def test_p1_is_exactly_ntp_only(distance):
    exs = examples(60, seed=1)
    dropped = PackedEpochs(exs, SPECIALS, LAYOUT, seq_len=96, seed=3, jepa_dropout=1.0)
    ntp_only = PackedEpochs(exs, SPECIALS, LAYOUT, seq_len=96, seed=3, use_jepa=False)
    rows_a, rows_b = dropped.rows(0), ntp_only.rows(0)
    assert [r.input_ids for r in rows_a] == [r.input_ids for r in rows_b]
    assert all(not r.pairs for r in rows_a)
    batch_a, batch_b = collate(rows_a[:4]), collate(rows_b[:4])
    assert batch_a["pair_mask"].sum() == 0
    den = torch.tensor(float((batch_a["labels"] != -100).sum()))
    model_a, model_b = tiny_model(seed=7), tiny_model(seed=7)
    loss_a, _ = HybridObjective(model_a, JepaConfig.paper(lam=1.0, distance=distance))(batch_a, den, torch.tensor(1.0))
    loss_b, _ = HybridObjective(model_b, JepaConfig.paper(lam=0.0))(batch_b, den, torch.tensor(1.0))
    loss_a.backward()
    loss_b.backward()
    assert torch.equal(loss_a, loss_b)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_the_draw_of_a_record_does_not_depend_on_how_the_stream_is_chunked():
    """Shards pack the stream in chunks (epoch 0), memory packs it whole: every record gets the same draw,
    across block boundaries, and it is the documented formula."""
    from megajepa.data.loss_dropout import BLOCK, keeps_views
    n, p = 2 * BLOCK + 300, 0.75
    whole = keeps_views(11, 0, np.arange(n), p)
    for chunk in (7, 1000, BLOCK):
        pieces = np.concatenate([keeps_views(11, 0, np.arange(s, min(s + chunk, n)), p) for s in range(0, n, chunk)])
        assert np.array_equal(pieces, whole), chunk
    assert [bool(k) for k in whole[BLOCK - 3:BLOCK + 3]] == [direct_keeps(11, 0, r, p) for r in range(BLOCK - 3, BLOCK + 3)]
    assert abs((~whole).mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert not np.array_equal(keeps_views(11, 1, np.arange(n), p), whole)  # epochs draw anew


def test_in_memory_examples_are_keyed_by_their_record_in_the_stream():
    """A bad record is skipped without shifting the later records' draws, and PackedEpochs packs with
    views exactly the examples whose record keeps them (epoch 0 = what shards pack)."""
    from megajepa.data.examples import BadRecordReport, tokenize_records

    tok = CharTokenizer(50, 20)  # any tokenizer will do: only the records' places matter here
    records = [{"views": [f"text {i}", f"code {i}"]} for i in range(40)]
    records[5] = {"views": []}  # no views: skipped
    exs = tokenize_records(records, tok, "skip", BadRecordReport())
    assert [e.record for e in exs] == [i for i in range(40) if i != 5]
    epochs = PackedEpochs(exs, SPECIALS, LAYOUT, seq_len=256, seed=9, jepa_dropout=0.5)
    for epoch in (0, 1):
        want = [direct_keeps(9, epoch, e.record, 0.5) for e in exs]
        assert list(epochs.keeps_views(epoch)) == want
        assert sum(len(r.pairs) for r in epochs.rows(epoch)) == sum(want)
    chunked = tokenize_records(records[20:], tok, "skip", BadRecordReport(), first_record=20)
    assert [e.record for e in chunked] == list(range(20, 40))
