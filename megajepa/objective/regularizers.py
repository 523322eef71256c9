"""Anti-collapse regularisers on the JEPA embeddings Z [N, D] (Enc and/or Pred of every pair).

Both reduce Z to sums that one all-reduce turns into the global-batch statistic, so no rank gathers Z:
- SIGReg (LeJEPA, arXiv 2511.08544): the Epps-Pulley distance of each 1-D projection's empirical
  characteristic function from the standard Gaussian's, averaged over M random unit directions.
- VICReg's variance and covariance terms (Bardes et al. 2022): hinge on each dimension's std (target 1)
  plus the squared off-diagonal covariances / D.
Padded pair slots carry mask 0 and count nowhere; fewer than 2 valid rows give 0. Float32, no host sync.
"""
from __future__ import annotations

import numpy as np
import torch


def sigreg_directions(dim: int, n_directions: int, seed: int, step: int) -> torch.Tensor:
    """[dim, M] unit columns, fresh each step and the same on every rank (and after resume): the
    generator is seeded from (run seed, step) only."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    d = torch.randn(dim, n_directions, generator=g)
    return d / d.norm(dim=0, keepdim=True)


def epps_pulley_knots(knots: int, t_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, exp(-t^2/2), quadrature weights): trapezoid on [0, T] doubled for the even integrand over
    [-T, T], times the Gaussian weighting exp(-t^2/2) of the Epps-Pulley statistic (as LeJEPA's code)."""
    t = torch.linspace(0.0, t_max, knots)
    dt = t_max / (knots - 1)
    trapezoid = torch.full((knots,), 2 * dt)
    trapezoid[[0, -1]] = dt
    phi = torch.exp(-0.5 * t * t)
    return t, phi, trapezoid * phi


def _sigreg_sums(z: torch.Tensor, m: torch.Tensor, directions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """This rank's part: [2 * M * knots + 1] = cos and sin sums of every projection at every knot over
    the valid rows, and their count (what one all-reduce makes global)."""
    x = (z.float() @ directions).unsqueeze(-1) * t  # [N, M, knots]
    w = m[:, None, None]
    sums = torch.stack([(torch.cos(x) * w).sum(0), (torch.sin(x) * w).sum(0)]).flatten()
    return torch.cat([sums, m.sum().reshape(1)])


def _sigreg_statistic(packed: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n = packed[-1]
    cos_mean, sin_mean = (packed[:-1] / n.clamp_min(1)).reshape(2, -1, phi.shape[0])
    err = (cos_mean - phi).square() + sin_mean.square()
    stat = (err @ weights).mean()
    return torch.where(n >= 2, stat, torch.zeros_like(stat))


_compiled: dict = {}


def _maybe_compiled(fn, compiled: bool):
    """`fn` itself, or (train.compile) its torch.compile'd twin; the all-reduce between the two SIGReg
    parts stays outside the compiled graphs."""
    if not compiled:
        return fn
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


def sigreg(z: torch.Tensor, mask: torch.Tensor, directions: torch.Tensor, knots: int = 17, t_max: float = 3.0,
           all_reduce=None, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(statistic averaged over directions, global count of valid rows).

    `all_reduce(x)` sums x over data-parallel ranks with autograd (regularizers.autograd_all_reduce):
    the cos/sin sums [2, M, knots] and the count travel in one call. The statistic is not scaled by N
    (LeJEPA's test statistic is), so `jepa.reg_weight` means the same at every batch size. `compiled`:
    both parts under torch.compile (train.compile)."""
    t, phi, weights = (x.to(z.device) for x in epps_pulley_knots(knots, t_max))
    packed = _maybe_compiled(_sigreg_sums, compiled)(z, mask.to(z.device, torch.float32),
                                                     directions.to(z.device, torch.float32), t)
    if all_reduce is not None:
        packed = all_reduce(packed)
    return _maybe_compiled(_sigreg_statistic, compiled)(packed, phi, weights), packed[-1]


def vicreg(z: torch.Tensor, mask: torch.Tensor, all_reduce=None, eps: float = 1e-4
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance hinge + covariance penalty, global count of valid rows), from the global first and
    second moments (one all-reduce of D + D^2 + 1 numbers); unbiased (n - 1) as VICReg."""
    zf = z.float()
    m = mask.to(z.device, torch.float32)
    zm = zf * m[:, None]
    dim = zf.shape[1]
    packed = torch.cat([zm.sum(0), (zm.T @ zf).flatten(), m.sum().reshape(1)])
    if all_reduce is not None:
        packed = all_reduce(packed)
    n = packed[-1]
    mean = packed[:dim] / n.clamp_min(1)
    cov = (packed[dim:-1].reshape(dim, dim) - n * torch.outer(mean, mean)) / (n - 1).clamp_min(1)
    std = torch.sqrt(torch.diagonal(cov).clamp_min(0) + eps)
    variance = torch.relu(1.0 - std).mean()
    off = cov - torch.diag(torch.diagonal(cov))
    total = variance + off.square().sum() / dim
    return torch.where(n >= 2, total, torch.zeros_like(total)), n


def autograd_all_reduce(x: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over ranks whose backward sums the gradients too: every rank's loss holds the global
    statistic, so after the engine averages gradients over ranks each rank's rows get d(stat)/dz."""
    import torch.distributed.nn.functional as dist_nn

    return dist_nn.all_reduce(x, group=group)


def regularizer(name: str, z: torch.Tensor, mask: torch.Tensor, directions: torch.Tensor | None,
                knots: int, t_max: float, all_reduce=None, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`jepa.regularizer`: sigreg | vicreg -> (R(Z), global count of valid rows); `compiled`: SIGReg
    under torch.compile (VICReg stays eager: a few matmuls)."""
    if name == "sigreg":
        return sigreg(z, mask, directions, knots, t_max, all_reduce, compiled)
    if name == "vicreg":
        return vicreg(z, mask, all_reduce)
    raise ValueError(f"regularizer: unknown regularizer {name!r}")
