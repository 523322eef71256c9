"""The reference-faithful switches (issue 12, section 3), each against an independent reference: weight
schedules against the direct formula, `paper` dropout's realised weight lambda * (1 - alpha) over many
draws (and the same draws after a resume), label counts under label_prompt against a hand count from the
layout rule (also through the shards path), train_all_views=first against a hand-built unit, bad values."""
import json

import numpy as np
import pytest
import torch
from helpers import SPECIALS, random_packed_batch, random_views, tiny_model

from megajepa.config import ConfigError, JepaConfig, load_config
from megajepa.data.packing import IGNORE, LayoutConfig, build_unit
from megajepa.objective.hybrid import HybridObjective
from megajepa.objective.schedules import term_weights, warmed

sp = SPECIALS


def labelled(segment) -> int:
    return sum(1 for t in segment.labels if t != IGNORE)


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize("weight,low,warmup", [(1.0, 0.0, 10), (2.0, 0.5, 7), (0.3, 0.9, 3), (1.5, 0.2, 0)])
def test_warmed_is_the_linear_ramp(weight, low, warmup):
    for step in range(warmup + 5):
        fraction = 1.0 if warmup == 0 else min(step, warmup) / warmup
        assert warmed(weight, low, warmup, step) == pytest.approx(low + (weight - low) * fraction, abs=1e-12)
    assert warmed(weight, low, warmup, 0) == (low if warmup else weight)


def test_the_reference_ramp_over_the_whole_run():
    """--lbd_warmup: min_lbd + (lbd - min_lbd) * global_step / (max_steps - 1), global_step from 0."""
    max_steps, lbd, min_lbd = 50, 2.0, 0.25
    for step in range(max_steps):
        assert warmed(lbd, min_lbd, max_steps - 1, step) == pytest.approx(
            min_lbd + (lbd - min_lbd) * step / (max_steps - 1), abs=1e-12)


def test_term_weights_warm_both_terms():
    j = JepaConfig.paper(lam=2.0, lambda_min=0.5, lambda_warmup_steps=4, regularizer="vicreg", reg_weight=0.1,
                   reg_min=0.0, reg_warmup_steps=10)
    for step in range(12):
        w = term_weights(j, step)
        assert w.lam == pytest.approx(0.5 + 1.5 * min(step, 4) / 4)
        assert w.reg == pytest.approx(0.1 * min(step, 10) / 10)
    default = JepaConfig.paper(lam=0.7, reg_weight=0.2)
    assert term_weights(default, 0) == term_weights(default, 10**6)
    assert (term_weights(default, 3).lam, term_weights(default, 3).reg) == (0.7, 0.2)  # today's weights, exactly


@pytest.mark.slow
def test_the_objective_trains_with_the_warmed_lambda():
    """Loss at step s of a warming run == loss of a run whose fixed lambda is the formula's value at s."""
    batch = random_packed_batch(3, predictors=1)
    ntp_den = (batch["labels"] != IGNORE).sum().float()
    jepa_den = batch["pair_mask"].sum().float().clamp_min(1)
    ramp = JepaConfig.paper(lam=1.0, lambda_min=0.2, lambda_warmup_steps=5)
    model = tiny_model(seed=1)
    with torch.no_grad():
        for step in (0, 2, 5, 9):
            lam = 0.2 + 0.8 * min(step, 5) / 5
            got, _ = HybridObjective(model, ramp)(batch, ntp_den, jepa_den, step)
            want, _ = HybridObjective(model, JepaConfig.paper(lam=lam))(batch, ntp_den, jepa_den, step)
            assert torch.allclose(got, want, rtol=1e-6, atol=0), (step, got, want)


# ---------------------------------------------------------------- paper dropout
def paper(alpha=0.3, lam=1.0):
    return JepaConfig.paper(lam=lam, dropout=alpha, dropout_weighting="paper")


@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.75])
def test_paper_dropout_realises_lambda_times_one_minus_alpha(alpha):
    lam, n = 2.0, 2000
    weights = [term_weights(paper(alpha, lam), step, seed=11).lam for step in range(n)]
    assert set(weights) == {0.0, lam}  # the whole micro-batch's term, not renormalised
    sigma = lam * np.sqrt(alpha * (1 - alpha) / n)
    assert abs(np.mean(weights) - lam * (1 - alpha)) < 4 * sigma, (np.mean(weights), lam * (1 - alpha))
    # "resume": a fresh call for the second half draws the same, whatever ran before
    assert [term_weights(paper(alpha, lam), s, seed=11).lam for s in range(n - 1, n // 2 - 1, -1)] == weights[n // 2:][::-1]
    # another seed, another draw; micro-steps of one step are independent draws
    assert [term_weights(paper(alpha, lam), s, seed=12).lam for s in range(n)] != weights
    other_micro = [term_weights(paper(alpha, lam), s, seed=11, micro_step=1).lam for s in range(n)]
    disagree = np.mean([a != b for a, b in zip(weights, other_micro)])
    assert abs(disagree - 2 * alpha * (1 - alpha)) < 4 * np.sqrt(0.25 / n)


def test_paper_dropout_packs_every_example_with_views():
    assert paper(0.4).example_dropout == 0.0 and JepaConfig.paper(dropout=0.4).example_dropout == 0.4
    cfg = load_config(None, ["jepa.dropout=0.4", "jepa.dropout_weighting=paper"])
    assert cfg.jepa.example_dropout == 0.0


@pytest.mark.slow
def test_a_dropped_micro_batch_is_the_ntp_loss_and_a_kept_one_is_unchanged():
    batch = random_packed_batch(5, predictors=1)
    ntp_den = (batch["labels"] != IGNORE).sum().float()
    jepa_den = batch["pair_mask"].sum().float()
    assert jepa_den > 0
    j = paper(0.5, lam=1.5)
    kept = [s for s in range(40) if term_weights(j, s, seed=4).lam > 0]
    dropped = [s for s in range(40) if term_weights(j, s, seed=4).lam == 0]
    assert kept and dropped
    for step, reference in ((dropped[0], JepaConfig.paper(lam=0.0)), (kept[0], JepaConfig.paper(lam=1.5))):
        model, twin = tiny_model(seed=2), tiny_model(seed=2)
        got, _ = HybridObjective(model, j, seed=4)(batch, ntp_den, jepa_den, step)
        want, _ = HybridObjective(twin, reference, seed=4)(batch, ntp_den, jepa_den, step)
        got.backward()
        want.backward()
        assert torch.equal(got, want)
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), twin.parameters()))


# ---------------------------------------------------------------- label_prompt
@pytest.mark.parametrize("with_system", [False, True])
def test_label_prompt_labels_every_rendered_token(with_system):
    rng = np.random.default_rng(0)
    for _ in range(50):
        text, code = random_views(rng)
        system = [int(t) for t in rng.integers(16, 96, size=int(rng.integers(1, 6)))] if with_system else None
        # the rendered stream by the layout rule: bos [system sep] Text sep Code eos
        hand = [sp.bos] + (system + [sp.sep] if system else []) + text + [sp.sep] + code + [sp.eos]
        on = build_unit([text, code], sp, LayoutConfig(label_prompt=True), prompt=system).segments[0]
        off = build_unit([text, code], sp, LayoutConfig(), prompt=system).segments[0]
        assert on.tokens == off.tokens == hand
        assert labelled(on) == len(hand) - 1 == (len(system) + 1 if system else 0) + len(text) + 1 + len(code) + 1
        assert on.labels == hand[1:] + [IGNORE]  # each position predicts the next rendered token
        assert labelled(off) == len(code) + 1  # the answer only (today's default)


@pytest.mark.slow
def test_label_prompt_holds_on_the_shards_path(tmp_path):
    """tools/preprocess_data.py: the manifest's labelled-token count over chat records equals the hand count."""
    from megajepa.data.preprocess import preprocess
    from megajepa.data.tokenizer.sentencepiece import train_tokenizer
    rng = np.random.default_rng(1)
    words = ["match", "lines", "with", "the", "word", "dog", "cat", "before", "vowel", "number"]
    rows = [[" ".join(rng.choice(words, size=int(rng.integers(2, 7)))) for _ in range(3)] for _ in range(60)]
    with open(tmp_path / "chat.jsonl", "w") as f:
        for system, user, assistant in rows:
            f.write(json.dumps({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                                             {"role": "assistant", "content": assistant}]}) + "\n")
    tok = train_tokenizer([t for r in rows for t in r] * 5, tmp_path / "tok.model", 320, seed=0)
    counts = {}
    for on in (True, False):
        cfg = load_config(None, [f"data.tokenizer={tok.path}", "data.seq_len=256", "data.system_prompt=true",
                                 f"data.label_prompt={str(on).lower()}", f"data.sources=[{tmp_path}/chat.jsonl]"])
        counts[on] = preprocess(cfg, str(tmp_path / f"shards_{on}"), workers=1, progress=False)["counts"]
        assert counts[on]["examples"] == len(rows) and counts[on]["records_skipped"] == 0
    n = [[len(tok.encode(t)) for t in r] for r in rows]
    assert counts[True]["labelled_tokens"] == sum(s + 1 + u + 1 + a + 1 for s, u, a in n)  # all after bos
    assert counts[False]["labelled_tokens"] == sum(a + 1 for _, _, a in n)  # the answer and its eos


# ---------------------------------------------------------------- train_all_views
@pytest.mark.parametrize("n_views,embed_at", [(2, "end"), (2, "last"), (3, "end")])
def test_train_all_first_has_one_labelled_stream(n_views, embed_at):
    rng = np.random.default_rng(n_views)
    for _ in range(20):
        views = random_views(rng, n_views)
        first = build_unit(views, sp, LayoutConfig(train_all=True, train_all_views="first", embed_at=embed_at))
        streams = [s for s in first.segments if labelled(s)]
        assert len(streams) == 1
        assert streams[0].tokens == [sp.bos] + views[0] + [sp.eos]  # `Text eos` after bos, every token a target
        assert labelled(streams[0]) == len(views[0]) + 1
        marker = [sp.eos] if embed_at == "end" else []
        copies = [s.tokens for s in first.segments if not labelled(s) and s.ctx < 0]
        assert copies == [[sp.bos] + v + marker for v in views[1:]]  # the other views: isolated, unlabelled
        assert len(first.pairs) == n_views - 1  # chain: every view still predicts the next
        every = build_unit(views, sp, LayoutConfig(train_all=True, embed_at=embed_at))
        assert sum(1 for s in every.segments if labelled(s)) == n_views  # `all` (today): each view a stream
        ntp_only = build_unit(views, sp, LayoutConfig(train_all=True, train_all_views="first"), with_jepa=False)
        assert [s.tokens for s in ntp_only.segments] == [[sp.bos] + views[0] + [sp.eos]]


# ---------------------------------------------------------------- bad values
@pytest.mark.parametrize("override,key", [
    ("jepa.dropout_weighting=sometimes", "jepa.dropout_weighting"), ("data.train_all_views=last", "data.train_all_views"),
    ("data.train_all_views=first", "data.train_all_views"), ("jepa.lambda_min=-0.1", "jepa.lambda_min"),
    ("jepa.lambda_warmup_steps=-1", "jepa.lambda_warmup_steps"), ("jepa.reg_min=-1", "jepa.reg_min"),
    ("jepa.reg_warmup_steps=-5", "jepa.reg_warmup_steps"), ("data.label_prompt=maybe", "data.label_prompt"),
    ("jepa.lambda_warmup_steps=2.5", "jepa.lambda_warmup_steps")])
def test_bad_values_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


# ---------------------------------------------------------------- the trainer's logs
def _train_one_rank(rank, out, *extra):
    import os
    os.environ.update(OMP_NUM_THREADS="1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    from megajepa import distributed
    from megajepa.config import load_config as load
    from megajepa.training.trainer import train
    train(load(None, [f"output_dir={out}", "data.num_train=120", "data.vocab_size=384", "data.seq_len=128",
                      "model.dim=64", "model.n_layers=1", "model.ffn_dim=128", "train.micro_batch_size=2",
                      "train.grad_accum=2", "train.max_steps=8", "train.warmup_steps=1", "train.log_interval=1",
                      "train.save_interval=100", "seed=21", *extra]), distributed.init_distributed())


@pytest.mark.slow
def test_the_logs_report_the_weights_the_step_trained_with(tmp_path):
    """losses.jsonl's `lambda` per step = the warm-up formula times the kept fraction of the step's two
    micro-batch draws, the logged total uses it, and TensorBoard's weight/lambda equals it (one step per
    log interval)."""
    from helpers import run_gloo_ranks
    from test_trainer_inprocess import tensorboard_scalars
    out = str(tmp_path / "run")
    run_gloo_ranks(_train_one_rank, 1, out, "jepa.lambda=2.0", "jepa.lambda_min=0.5", "jepa.lambda_warmup_steps=4",
                   "jepa.dropout=0.5", "jepa.dropout_weighting=paper")
    with open(f"{out}/losses.jsonl") as f:
        lines = {r["step"]: r for r in map(json.loads, f)}
    tb = tensorboard_scalars(out)
    assert sorted(lines) == list(range(1, 9))
    fractions = set()
    for step, r in lines.items():
        trained_at = step - 1  # the line of step s is written after the update made at step index s - 1
        ramp = 0.5 + 1.5 * min(trained_at, 4) / 4
        kept = [term_weights(paper(0.5, 2.0), trained_at, seed=21, micro_step=m).lam > 0 for m in (0, 1)]
        fractions.add(sum(kept) / 2)
        assert r["lambda"] == pytest.approx(ramp * sum(kept) / 2, abs=1e-12), (step, r["lambda"], ramp, kept)
        assert r["loss"] == pytest.approx(r["lm"] + r["lambda"] * r["jepa"] + r["reg_weight"] * r["reg"], rel=1e-12)
        assert tb["weight/lambda"][step] == pytest.approx(r["lambda"], rel=1e-6)
    assert len(fractions) > 1  # the run saw steps with different kept fractions
