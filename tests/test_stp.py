"""Semantic Tube Prediction (issue 12, section 2) against references written from the definition.

The packed term (data/stp.py indices, objective/stp.py gather + cosine, HybridObjective) must equal a naive
per-example loop: each document's stream run through the model on its own, each displacement a sum of
per-token increments h[j] - h[j - 1] over the tokens it covers (so the reference never uses the packer's
index arithmetic). The reference repeats only the draw protocol: a Generator seeded (seed, STP_STREAM,
epoch, row), per document in row order, per sample: triples = 3 distinct content offsets; random_span =
s uniform in [0, n), t uniform in (s, n] redrawn while t - s = n.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SPECIALS as SP
from helpers import random_views, tiny_model
from test_objective_layouts import separate_hidden, streams, unpacked_loss

from megajepa.config import ConfigError, JepaConfig, StpConfig, load_config
from megajepa.data.collate import collate
from megajepa.data.loader import DistributedRowLoader, PackedEpochs
from megajepa.data.examples import Example
from megajepa.data.packing import IGNORE, LayoutConfig, build_unit, place
from megajepa.data.stp import STP_STREAM, StpSampling, add_stp_samples
from megajepa.objective.hybrid import HybridObjective

SEED, EPOCH = 11, 2
MODES = ("random_span", "triples", "e2e")


# ---------------------------------------------------------------- the reference, from the definition
def documents(views, layout, prompt):
    """(stream tokens, Text positions, Code positions) per NTP stream of one example."""
    if layout.train_all:
        return [([SP.bos] + v + [SP.eos], list(range(1, 1 + len(v))), []) for v in views]
    head = [SP.bos] + (prompt + [SP.sep] if prompt else [])
    tokens = head + [t for v in views[:-1] for t in v + [SP.sep]] + views[-1] + [SP.eos]
    text = list(range(len(head), len(head) + len(views[0])))
    code = list(range(len(tokens) - 1 - len(views[-1]), len(tokens) - 1)) if len(views) > 1 else []
    return [(tokens, text, code)]


def increments(h, positions):
    """The displacement over a set of tokens: the sum of what each token adds to the trajectory."""
    return sum((h[j] - h[j - 1] for j in positions), torch.zeros(h.shape[-1]))


def reference_samples(rng, h, text, code, mode, k, weighting):
    """[(a, b, weight)] for one document, or None when it is too short for the mode."""
    content = text + code
    out = []
    for _ in range(k):
        if mode == "triples":
            lo, hi = content[0], content[-1] + 1  # the document's content, separators between views included
            if hi - lo < 3:
                return None
            s, r, t = sorted(lo + int(i) for i in rng.choice(hi - lo, 3, replace=False))
            out.append((h[r] - h[s], h[t] - h[r], 1.0))
        elif mode == "random_span":
            n = len(content)
            if n < 2:
                return None
            s = int(rng.integers(0, n))
            t = int(rng.integers(s + 1, n + 1))
            while t - s == n:
                t = int(rng.integers(s + 1, n + 1))
            span, rest = content[s:t], content[:s] + content[t:]
            weight = {"none": 1.0, "cosine_like": 2 * len(rest) * len(span) / (len(rest) ** 2 + len(span) ** 2),
                      "jaccard_like": 1 - abs(len(rest) - len(span)) / n}[weighting]
            out.append((increments(h, rest), increments(h, span), weight))
        else:
            if not text or not code:
                return None
            out.append((increments(h, text), increments(h, code), 1.0))
    return out


def reference_stp(model, rows_of_examples, layout, mode, k=2, weighting="none", first_row=0):
    """(sum of weight * (1 - cos), weight sum, documents skipped): one forward per document."""
    total, weights, skipped = 0.0, 0.0, 0
    for b, examples in enumerate(rows_of_examples):
        rng = np.random.default_rng([SEED, STP_STREAM, EPOCH, first_row + b])
        for views, prompt in examples:
            for tokens, text, code in documents(views, layout, prompt):
                samples = reference_samples(rng, separate_hidden(model, tokens), text, code, mode, k, weighting)
                if samples is None:
                    skipped += 1
                    continue
                for a, v, w in samples:
                    total = total + w * (1 - F.cosine_similarity(a, v, dim=0))
                    weights += w
    return total, weights, skipped


def reference_without_stp(model, examples, layout, jepa):
    """gamma * NTP + lambda * JEPA, one forward per sequence (test_objective_layouts); NTP alone for one view."""
    if len(examples[0][0]) > 1:
        return unpacked_loss(model, examples, layout, jepa)
    ntp = 0.0
    for views, prompt in examples:
        for tokens, answer in streams(views, layout, prompt):
            h = separate_hidden(model, tokens)
            ntp = ntp + F.cross_entropy(model.lm_head(h[answer - 1:-1]), torch.tensor(tokens[answer:]), reduction="sum")
    return jepa.gamma * ntp


# ---------------------------------------------------------------- the packed side
def packed_batch(rows_of_examples, layout, mode, k=2, weighting="none", first_row=0):
    """Each inner list packed into its own row (units in order), then collated with STP samples."""
    units = [[build_unit(v, SP, layout, prompt=p) for v, p in examples] for examples in rows_of_examples]
    seq_len = max(sum(u.n_tokens for u in row) for row in units) + 3
    rows = [r for row in units for r in place(row, seq_len, SP)]
    assert len(rows) == len(rows_of_examples)
    return add_stp_samples(collate(rows), [r.docs for r in rows], EPOCH, first_row,
                           StpSampling(mode, k, weighting, SEED))


CASES = {  # name: (layout fields, views per example, with a chat prompt)
    "default": (dict(predictors=1), 2, False),
    "plain_text": (dict(predictors=1), 1, False),
    "train_all": (dict(predictors=2, train_all=True), 3, False),
    "chat_chain3": (dict(predictors=1), 3, True),
}


def make_rows(name, seed, low=1):
    fields, n_views, with_prompt = CASES[name]
    rng = np.random.default_rng(seed)
    rows = [[(random_views(rng, n_views, low=low), random_views(rng, 1)[0] if with_prompt else None)
             for _ in range(2)] for _ in range(2)]
    return LayoutConfig(**fields), rows


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", [n if n == "default" else pytest.param(n, marks=pytest.mark.slow) for n in CASES])
def test_packed_loss_and_gradients_equal_a_per_example_loop(mode, name):
    layout, rows = make_rows(name, seed=len(name) + len(mode))
    weighting = "jaccard_like" if name == "default" else "cosine_like" if name == "train_all" else "none"
    jepa = JepaConfig.paper(lam=0.4, gamma=1.3, predictors=layout.predictors)
    stp = StpConfig(lam=0.7, mode=mode, length_weighting=weighting)
    packed_model, reference_model = tiny_model(seed=3), tiny_model(seed=3)
    batch = packed_batch(rows, layout, mode, weighting=weighting)
    stp_sum, weight, skipped = reference_stp(reference_model, rows, layout, mode, weighting=weighting)
    assert float(batch["stp_skipped"]) == skipped
    assert math.isclose(float(batch["stp_weight"].sum()), weight, rel_tol=1e-6)
    one = torch.tensor(1.0)
    loss, stats = HybridObjective(packed_model, jepa, stp=stp)(batch, one, one, stp_denominator=torch.tensor(weight or 1.0))
    examples = [ex for row in rows for ex in row]
    expected = reference_without_stp(reference_model, examples, layout, jepa) + stp.lam * stp_sum / max(weight, 1e-12)
    assert weight > 0 or mode == "e2e" and name in ("plain_text", "train_all")  # one-view documents have no Code
    want = float(stp_sum.detach()) if torch.is_tensor(stp_sum) else stp_sum
    assert abs(float(stats["stp_sum"]) - want) < 1e-5 * max(1.0, want)
    loss.backward()
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-5 * max(1.0, abs(expected.item()))
    for (pname, p), q in zip(packed_model.named_parameters(), reference_model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), pname


@pytest.mark.parametrize("mode", MODES)
def test_samples_never_cross_a_document_boundary(mode):
    layout, rows = make_rows("default", seed=5)
    rows += make_rows("chat_chain3", seed=6)[1]
    batch = packed_batch(rows, layout, mode, k=8)
    seq_len = batch["input_ids"].shape[1]
    labelled = batch["labels"].reshape(-1) != IGNORE
    seg = batch["seg"].reshape(-1)
    checked = 0
    for sample, w in zip(batch["stp_idx"], batch["stp_weight"]):
        if w == 0:
            continue
        terms = sample.reshape(-1, 2)
        used = terms[terms[:, 0] != terms[:, 1]].reshape(-1)  # a zero displacement reads nothing
        assert len(set((used // seq_len).tolist())) == 1  # one row
        ids = set(seg[used].tolist())
        assert len(ids) == 1 and -1 not in ids  # one segment, not padding
        (doc,) = ids
        assert labelled[seg == doc].any()  # and it is an NTP stream, not a copy or a predictor block
        checked += 1
    assert checked == int((batch["stp_weight"] > 0).sum()) > 0


def epochs(mode="random_span", seed=SEED):
    rng = np.random.default_rng(7)
    examples = [Example(random_views(rng, 2, high=20), f"synthetic:{i}", i) for i in range(60)]
    return PackedEpochs(examples, SP, LayoutConfig(), 64, seed, stp=StpSampling(mode, 3, "none", seed))


def per_row_samples(batch):
    """Each row's samples in row-local positions (independent of where the row sits in its batch)."""
    seq_len = batch["input_ids"].shape[1]
    real = batch["stp_idx"][batch["stp_weight"] > 0]
    rows = real[:, 0, 0, 0] // seq_len
    return [(real[rows == b] - b * seq_len).tolist() for b in range(batch["input_ids"].shape[0])]


@pytest.mark.parametrize("mode", MODES)
def test_same_samples_after_resume_and_on_another_rank_count(mode):
    one_rank = DistributedRowLoader(epochs(mode), micro_batch=4)
    want = [per_row_samples(one_rank.next_batch()) for _ in range(5)]
    # two ranks of two rows each: rank r's batch is rows [2r, 2r + 2) of every global batch of four
    two = [DistributedRowLoader(epochs(mode), micro_batch=2, rank=r, world_size=2) for r in (0, 1)]
    for g in range(5):
        assert per_row_samples(two[0].next_batch()) + per_row_samples(two[1].next_batch()) == want[g]
    # resumed after three global batches, in a fresh process's objects
    resumed = DistributedRowLoader(epochs(mode), micro_batch=4)
    state = DistributedRowLoader(epochs(mode), micro_batch=4)
    for _ in range(3):
        state.next_batch()
    resumed.load_state_dict(state.state_dict())
    assert [per_row_samples(resumed.next_batch()) for _ in range(2)] == want[3:]
    # another epoch or seed draws other samples
    assert per_row_samples(epochs(mode, seed=SEED + 1).batch(0, 0, 4)) != want[0]


@pytest.mark.parametrize("mode", MODES)
def test_too_short_documents_are_counted_and_skipped_without_nan(mode):
    """One-token plain documents are too short for every mode: no sample, a count, a finite loss."""
    rows = [[([[30]], None), ([[31]], None)], [([[32]], None)]]
    batch = packed_batch(rows, LayoutConfig(), mode)
    assert float(batch["stp_skipped"]) == 3 and float(batch["stp_weight"].sum()) == 0
    model = tiny_model(seed=1)
    one = torch.tensor(1.0)
    loss, stats = HybridObjective(model, JepaConfig.paper(lam=0.0), stp=StpConfig(lam=1.0, mode=mode))(
        batch, one, one, stp_denominator=one)
    loss.backward()
    assert torch.isfinite(loss) and float(stats["stp_sum"]) == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_stp_off_adds_nothing_to_the_batch_or_the_loss():
    rng = np.random.default_rng(3)
    examples = [Example(random_views(rng, 2), f"synthetic:{i}", i) for i in range(20)]
    plain = PackedEpochs(examples, SP, LayoutConfig(), 64, SEED).batch(0, 0, 2)
    assert not any(key.startswith("stp_") for key in plain)
    one = torch.tensor(1.0)
    off, _ = HybridObjective(tiny_model(seed=2), JepaConfig.paper(), stp=StpConfig(lam=0.0))(plain, one, one)
    none, _ = HybridObjective(tiny_model(seed=2), JepaConfig.paper())(plain, one, one)
    assert off.item() == none.item()


@pytest.mark.parametrize("override,key", [("stp.lambda=-0.1", "stp.lambda"),
                                          ("stp.samples_per_document=0", "stp.samples_per_document"),
                                          ("stp.mode=curvature", "stp.mode"),
                                          ("stp.length_weighting=dice", "stp.length_weighting"),
                                          ("stp.samples_per_document=1.5", "stp.samples_per_document")])
def test_bad_stp_config_is_refused_before_compute(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_stp_alone_is_something_to_train():
    cfg = load_config(None, ["jepa.lambda=0", "jepa.gamma=0", "stp.lambda=0.02"])
    assert cfg.stp.lam == 0.02 and cfg.to_dict()["stp"]["lambda"] == 0.02
    with pytest.raises(ConfigError, match="nothing to train"):
        load_config(None, ["jepa.lambda=0", "jepa.gamma=0"])


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["stp.lambda=0.3", "stp.mode=triples"],  # with LLM-JEPA (jepa.lambda=2)
                                   ["stp.lambda=0.3", "jepa.lambda=0", "stp.samples_per_document=2"]])  # alone
def test_training_in_process_logs_a_finite_stp_loss(tmp_path, extra):
    """2 gloo ranks through the Trainer: losses.jsonl and TensorBoard carry loss/stp, the total adds
    stp.lambda * stp, and the displacements' effective rank is logged. (~40 s each)"""
    from test_trainer_inprocess import STEPS, _train, tensorboard_scalars

    from helpers import run_gloo_ranks
    from megajepa.training.logs.step_log import read

    out = str(tmp_path / "run")
    run_gloo_ranks(_train, 2, out, *extra)
    lines = read(f"{out}/losses.jsonl")
    lam = 0.0 if "jepa.lambda=0" in extra else 2.0
    assert sorted(lines) == list(range(1, STEPS + 1))
    for r in lines.values():
        assert not r["skipped"] and math.isfinite(r["stp"]) and 0 < r["stp"] <= 2
        jepa_part = 0.5 * r["lm"] + lam * r["jepa"] if lam else 0.5 * r["lm"]
        assert r["loss"] == jepa_part + 0.1 * r["reg"] + 0.3 * r["stp"]  # 0.1: the default SIGReg weight
    tb = tensorboard_scalars(out)
    assert all(math.isfinite(v) and v > 0 for v in tb["loss/stp"].values()) and len(tb["loss/stp"]) == STEPS
    assert all(v >= 1 for v in tb["collapse/erank_stp"].values()) and tb["stp/skipped_documents"][STEPS] == 0


@pytest.mark.slow
def test_compiled_stp_term_equals_eager():
    """train.compile: the STP gather + cosine under torch.compile gives the eager loss and gradients. (~60 s)"""
    import copy

    layout, rows = make_rows("default", seed=21)
    batch = packed_batch(rows, layout, "random_span", weighting="cosine_like")
    stp = StpConfig(lam=0.5, mode="random_span", length_weighting="cosine_like")
    eager = HybridObjective(tiny_model(seed=5).train(), JepaConfig.paper(lam=0.0), stp=stp)
    compiled = HybridObjective(copy.deepcopy(eager.model), JepaConfig.paper(lam=0.0), stp=stp, compile_losses=True)
    one, den = torch.tensor(1.0), batch["stp_weight"].sum()
    results = []
    for objective in (eager, compiled):
        loss, stats = objective(batch, one, one, stp_denominator=den)
        loss.backward()
        results.append((loss.detach(), stats["stp_sum"], {n: p.grad for n, p in objective.named_parameters()}))
    (loss, stp_sum, grads), (c_loss, c_stp_sum, c_grads) = results
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_stp_sum, stp_sum, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(c_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_too_short_documents_are_said_once_in_the_log(caplog):
    """The first log interval with documents too short for stp.mode warns (with the mode); later ones only
    count them in stp/skipped_documents."""
    import logging
    from types import SimpleNamespace

    from megajepa.training.trainer import Trainer
    cfg = load_config(None, ["stp.lambda=0.1", "stp.mode=triples"])
    state = SimpleNamespace(cfg=cfg, rank=0, step=5, _warned_short_documents=False)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        assert Trainer._stp_scalars(state, 0.4, 0.0) == {"loss/stp": 0.4, "stp/skipped_documents": 0.0}
        assert not caplog.records
        assert Trainer._stp_scalars(state, 0.4, 3.0)["stp/skipped_documents"] == 3.0
        state.step = 10
        Trainer._stp_scalars(state, 0.4, 2.0)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("step 5: 3 document(s)") and "stp.mode=triples" in warned[0]
