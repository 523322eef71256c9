"""Collapse monitor: effective rank and cosine statistics against independent computations, the
collapse warning, and the gather across 2 gloo ranks."""
import logging
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_gloo_ranks

from megajepa.objective.geometry import collapse_stats, effective_rank
from megajepa.training.guards.collapse import CollapseMonitor


def matrix_with_singular_values(s, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g))
    v, _ = torch.linalg.qr(torch.randn(len(s), len(s), generator=g))
    return u @ torch.diag(torch.tensor(s)) @ v.T


def test_effective_rank_is_exp_entropy_of_normalised_singular_values():
    s = [5.0, 3.0, 1.0, 0.5, 0.1]
    p = np.array(s) / sum(s)
    assert math.isclose(effective_rank(matrix_with_singular_values(s)), math.exp(-(p * np.log(p)).sum()), rel_tol=1e-5)
    assert math.isclose(effective_rank(matrix_with_singular_values([2.0] * 8)), 8.0, rel_tol=1e-5)
    assert math.isclose(effective_rank(torch.ones(30, 16)), 1.0, rel_tol=1e-4)


def test_cosines_match_a_loop():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    stats = collapse_stats(pred, target)
    pos = [F.cosine_similarity(pred[i], target[i], dim=0) for i in range(6)]
    neg = [F.cosine_similarity(pred[i], target[j], dim=0) for i in range(6) for j in range(6) if i != j]
    assert math.isclose(stats["collapse/cos_pred_target"], float(sum(pos) / 6), abs_tol=1e-6)
    assert math.isclose(stats["collapse/cos_pred_other"], float(sum(neg) / 30), abs_tol=1e-6)


def test_warns_on_collapse_only(caplog):
    g = torch.Generator().manual_seed(2)
    monitor = CollapseMonitor(width=32, warn_fraction=0.25)
    mask = torch.ones(64)
    healthy = torch.randn(64, 32, generator=g)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        monitor(healthy, healthy + 0.1 * torch.randn(64, 32, generator=g), mask, step=1)
    assert not caplog.records
    collapsed = torch.randn(1, 32, generator=g) + 1e-3 * torch.randn(64, 32, generator=g)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        stats = monitor(collapsed, collapsed, mask, step=7)
    assert stats["collapse/erank_pred"] < 2
    assert any("step 7" in r.getMessage() and "collapsing" in r.getMessage() for r in caplog.records)


def test_a_lasting_collapse_warns_once_per_ten_intervals(caplog):
    g = torch.Generator().manual_seed(3)
    monitor = CollapseMonitor(width=32, warn_fraction=0.25)
    collapsed = torch.randn(1, 32, generator=g) + 1e-3 * torch.randn(64, 32, generator=g)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        for step in range(1, 13):
            monitor(collapsed, collapsed, torch.ones(64), step=step)
    warned = [r.getMessage() for r in caplog.records if "collapsing" in r.getMessage()]
    assert [m.split(":")[0] for m in warned] == ["step 1", "step 11"]
    assert "for 11 log intervals" in warned[1]


def test_stp_displacements_warn_by_the_rank_rule(caplog):
    """collapse/erank_stp = the effective rank of both vectors of every real sample (padded slots, weight
    0, left out); a collapsed set warns (and marks the run for the summary), a healthy one does not."""
    g = torch.Generator().manual_seed(5)
    monitor = CollapseMonitor(width=32, warn_fraction=0.25)
    healthy = torch.randn(40, 2, 32, generator=g)
    weight = torch.cat([torch.ones(36), torch.zeros(4)])
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        stats = monitor.displacements(healthy, weight, step=3)
    assert not caplog.records and not monitor.warned
    assert math.isclose(stats["collapse/erank_stp"], effective_rank(healthy[:36].reshape(72, 32)), rel_tol=1e-6)
    collapsed = torch.randn(1, 1, 32, generator=g) + 1e-3 * torch.randn(40, 2, 32, generator=g)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        stats = monitor.displacements(collapsed, weight, step=9)
    assert stats["collapse/erank_stp"] < 2 and monitor.warned
    assert any("step 9: collapse/erank_stp" in r.getMessage() for r in caplog.records)


def test_warns_when_pred_is_as_close_to_other_targets_after_warm_up(caplog):
    """Few pairs (loss dropout): the rank threshold (5% of 12 embeddings) is below 1, so it cannot fire, but
    every Pred is as close to the other targets as to its own; the warning waits for the warm-up to end and
    for 3 such log intervals in a row."""
    g = torch.Generator().manual_seed(4)
    basis = torch.randn(3, 32, generator=g)
    few = torch.randn(12, 3, generator=g).abs() @ basis + 10 * torch.randn(1, 32, generator=g)
    target = few + 1e-3 * torch.randn(12, 32, generator=g)
    monitor = CollapseMonitor(width=32, warn_fraction=0.05, cos_margin=0.05, after_step=30)
    stats = collapse_stats(few, target)
    assert stats["collapse/erank_enc"] > 0.05 * 12  # the rank rule alone would stay silent
    assert stats["collapse/cos_pred_target"] - stats["collapse/cos_pred_other"] < 0.05  # (a direct check of the data)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        monitor(few, target, torch.ones(12), step=30)  # still in warm-up
        monitor(few, target, torch.ones(12), step=40)
        monitor(few, target, torch.ones(12), step=50)
        assert not caplog.records  # two intervals past warm-up: not yet confirmed
        monitor(few, target, torch.ones(12), step=60)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["step 60"]
    assert "collapse_cos_margin" in caplog.records[0].getMessage()
    caplog.clear()
    healthy = torch.randn(12, 32, generator=g)
    with caplog.at_level(logging.WARNING, logger="megajepa"):
        CollapseMonitor(32, 0.05, 0.05, after_step=30)(healthy, healthy + 0.1 * torch.randn(12, 32, generator=g),
                                                         torch.ones(12), step=40)
    assert not caplog.records


def rank_embeddings(rank):
    """Rank r: 3 or 5 valid pairs in a padded bucket of 8 (padding rows are garbage on purpose)."""
    g = torch.Generator().manual_seed(10 + rank)
    n = (3, 5)[rank]
    pred, target = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g)
    return pred, target, torch.tensor([1.0] * n + [0.0] * (8 - n))


def _monitor_worker(rank, out_dir):
    stats = CollapseMonitor(12, 0.05)(*rank_embeddings(rank), step=1)
    torch.save(stats, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_statistics_cover_every_rank(tmp_path):
    run_gloo_ranks(_monitor_worker, 2, str(tmp_path))
    parts = [rank_embeddings(r) for r in range(2)]
    pred = torch.cat([p[m > 0] for p, _, m in parts])
    target = torch.cat([t[m > 0] for _, t, m in parts])
    expected = collapse_stats(pred, target)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for name, value in expected.items():
            assert math.isclose(got[name], value, rel_tol=1e-5, abs_tol=1e-6), (r, name)
