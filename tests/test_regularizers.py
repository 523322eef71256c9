"""SIGReg and VICReg against their formulas computed directly in NumPy (float64), value and gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_gloo_ranks

from megajepa.objective.regularizers import (
    autograd_all_reduce,
    sigreg,
    sigreg_directions,
    vicreg,
)

KNOTS, T_MAX = 17, 3.0


def epps_pulley_numpy(z: np.ndarray, directions: np.ndarray) -> float:
    """Mean over directions of the integral over [-T, T] of |ECF(t) - exp(-t^2/2)|^2 exp(-t^2/2), by
    the trapezoid rule on the symmetric grid with the same spacing."""
    t = np.linspace(-T_MAX, T_MAX, 2 * KNOTS - 1)
    stats = []
    for d in directions.T:
        p = z @ d
        ecf = np.exp(1j * np.outer(t, p)).mean(axis=1)
        integrand = np.abs(ecf - np.exp(-t * t / 2)) ** 2 * np.exp(-t * t / 2)
        stats.append(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t)))
    return float(np.mean(stats))


def vicreg_loop(z: np.ndarray, eps: float = 1e-4) -> float:
    n, dim = z.shape
    means = [sum(z[i, a] for i in range(n)) / n for a in range(dim)]
    cov = [[sum((z[i, a] - means[a]) * (z[i, b] - means[b]) for i in range(n)) / (n - 1) for b in range(dim)]
           for a in range(dim)]
    variance = sum(max(0.0, 1.0 - (cov[a][a] + eps) ** 0.5) for a in range(dim)) / dim
    covariance = sum(cov[a][b] ** 2 for a in range(dim) for b in range(dim) if a != b) / dim
    return variance + covariance


def numeric_grad(f, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        g[idx] = (f(up) - f(down)) / (2 * h)
    return g


def padded(z: np.ndarray, pad: int = 3):
    """Z with `pad` garbage rows of mask 0 appended: they must not count."""
    rows = np.concatenate([z, np.full((pad, z.shape[1]), 7.0)])
    mask = torch.tensor([1.0] * len(z) + [0.0] * pad)
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True), mask


def test_sigreg_value_and_gradient_match_the_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 4)) * 0.7 + 0.2
    dirs = sigreg_directions(4, 6, seed=3, step=11)
    zt, mask = padded(z)
    value, n = sigreg(zt, mask, dirs, KNOTS, T_MAX)
    value.backward()
    ref = lambda x: epps_pulley_numpy(x, dirs.double().numpy())
    assert n.item() == 10
    assert value.item() == pytest.approx(ref(z), rel=1e-5)
    np.testing.assert_allclose(zt.grad[:10].numpy(), numeric_grad(ref, z), rtol=1e-4, atol=1e-6)
    assert zt.grad[10:].abs().max().item() == 0.0


def test_sigreg_gaussian_near_zero_collapsed_and_rank1_high():
    g = torch.Generator().manual_seed(0)
    dirs = sigreg_directions(32, 256, seed=0, step=0)
    mask = torch.ones(4096)
    gaussian = sigreg(torch.randn(4096, 32, generator=g), mask, dirs)[0].item()
    collapsed = sigreg(torch.ones(4096, 32) * 0.3, mask, dirs)[0].item()
    rank1 = sigreg(torch.randn(4096, 1, generator=g) * torch.randn(1, 32, generator=g), mask, dirs)[0].item()
    assert gaussian < 1e-3
    assert collapsed > 100 * gaussian and rank1 > 100 * gaussian


def test_sigreg_fewer_than_two_rows_is_zero():
    dirs = sigreg_directions(4, 8, seed=0, step=0)
    value, n = sigreg(torch.randn(3, 4), torch.tensor([0.0, 1.0, 0.0]), dirs)
    assert value.item() == 0.0 and n.item() == 1


def test_directions_depend_on_seed_and_step_only():
    a = sigreg_directions(16, 8, seed=5, step=7)
    assert torch.equal(a, sigreg_directions(16, 8, seed=5, step=7))
    assert not torch.equal(a, sigreg_directions(16, 8, seed=5, step=8))
    torch.testing.assert_close(a.norm(dim=0), torch.ones(8))


def test_vicreg_matches_a_per_dimension_loop():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(9, 5)) * np.array([0.3, 1.5, 0.9, 2.0, 0.1]) + 0.5
    z[:, 2] += 0.8 * z[:, 1]  # correlated dimensions
    zt, mask = padded(z)
    value, _ = vicreg(zt, mask)
    value.backward()
    assert value.item() == pytest.approx(vicreg_loop(z), rel=1e-5)
    np.testing.assert_allclose(zt.grad[:9].numpy(), numeric_grad(vicreg_loop, z), rtol=1e-3, atol=1e-5)
    assert zt.grad[9:].abs().max().item() == 0.0


def _split_ranks(rank: int, world: int, name: str):
    torch.manual_seed(0)
    z = torch.randn(13, 6) * 1.3
    mask = torch.ones(13)
    dirs = sigreg_directions(6, 16, seed=1, step=2)
    fn = (lambda x, m, **kw: sigreg(x, m, dirs, **kw)) if name == "sigreg" else vicreg
    full = z.clone().requires_grad_(True)
    ref, _ = fn(full, mask)
    ref.backward()
    rows = [range(7), range(7, 13)][rank]  # uneven split, plus a padded slot on rank 1
    local = torch.cat([z[list(rows)], torch.full((1, 6), 9.0)]).requires_grad_(True)
    local_mask = torch.cat([mask[list(rows)], torch.zeros(1)])
    value, n = fn(local, local_mask, all_reduce=autograd_all_reduce)
    value.backward()
    assert n.item() == 13
    torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-7)
    # The engine averages gradients over ranks: each rank's rows then carry the global gradient.
    torch.testing.assert_close(local.grad[:-1] / world, full.grad[list(rows)], rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sigreg", "vicreg"])
def test_two_gloo_ranks_with_split_embeddings_equal_one_rank_with_all(name):
    run_gloo_ranks(_split_ranks, 2, 2, name)


@pytest.mark.parametrize("name", ["sigreg", "vicreg"])
def test_objective_adds_reg_weight_times_r_of_pred_and_enc(name):
    from helpers import random_packed_batch, tiny_model

    from megajepa.config import JepaConfig
    from megajepa.objective.hybrid import HybridObjective

    batch = random_packed_batch(3, seq_len=64, n=8, predictors=1)
    one = torch.tensor(1.0)
    plain = HybridObjective(tiny_model(seed=2), JepaConfig.paper(lam=1.0))
    loss0, stats = plain(batch, one, one, 4)
    reg = HybridObjective(tiny_model(seed=2), JepaConfig.paper(lam=1.0, regularizer=name, reg_weight=0.5), seed=9)
    loss, reg_stats = reg(batch, one, one, 4)
    z = torch.cat([stats["pred"], stats["target"]]).numpy().astype(np.float64)
    z = z[np.concatenate([batch["pair_mask"].numpy(), batch["pair_mask"].numpy()]) > 0]
    direct = epps_pulley_numpy(z, sigreg_directions(z.shape[1], 256, 9, 4).double().numpy()) \
        if name == "sigreg" else vicreg_loop(z)
    assert reg_stats["reg"].item() == pytest.approx(direct, rel=1e-4)
    assert (loss - loss0).item() == pytest.approx(0.5 * direct, rel=1e-4)


@pytest.mark.parametrize("override", ["jepa.regularizer=sigrag", "jepa.reg_weight=-1", "jepa.reg_on=enc",
                                      "jepa.sigreg_knots=1"])
def test_bad_regularizer_settings_are_config_errors(override):
    from megajepa.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])
