"""Paired tests for the from-scratch studies (benchmarks/reproduce_nlrx.py, benchmarks/study_v2.py).

Seed-level: the paper's paired one-tailed t-test (arXiv 2509.14252, Table 2) and an exact sign-flip
permutation test, both on per-seed accuracy differences (arm - baseline, same seed). Example-level: an
exact McNemar test on per-example correctness pooled over seeds (each pair = same example, same seed).
"""
from __future__ import annotations

import itertools
import math
import statistics


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided sign-flip permutation test of mean(diffs) = 0 (paired by seed)."""
    observed = abs(sum(diffs))
    flips = list(itertools.product((1, -1), repeat=len(diffs)))
    return sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12 for signs in flips) / len(flips)


def paired_t_greater(diffs: list[float]) -> dict[str, float | None]:
    """Paired one-tailed t-test of mean(diffs) > 0: {t, df, p}; p None below 2 seeds, and for diffs all
    equal (t undefined): p 0 if they are all > 0, else 1."""
    n = len(diffs)
    if n < 2:
        return {"t": None, "df": n - 1, "p": None}
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    if sd == 0:
        return {"t": None, "df": n - 1, "p": 0.0 if mean > 0 else 1.0}
    from scipy.stats import t as student_t  # scipy: a dependency of the plots extra
    t = mean / (sd / math.sqrt(n))
    return {"t": t, "df": n - 1, "p": float(student_t.sf(t, n - 1))}


def mcnemar_p(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    """(a right b wrong, a wrong b right, exact two-sided binomial p)."""
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return only_a, only_b, p
