"""QBER confidence bounds: Clopper–Pearson against scipy's beta quantiles (a table)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import beta

import qkd_circuits as qkd


@pytest.mark.parametrize(
    "k, n, eps",
    [(0, 1000, 0.05), (5, 100, 0.05), (50, 100, 1e-10), (12_345, 200_000, 1e-10),
     (100, 100, 0.01), (3, 10, 0.2), (250_000, 1_000_000, 1e-10), (1, 5_000_000, 1e-9)],
)
def test_clopper_pearson_matches_beta_quantiles(k, n, eps):
    lo, hi = qkd.clopper_pearson(k, n, eps)
    # Clopper & Pearson 1934: lower = Beta(k, n−k+1).ppf(ε), upper = Beta(k+1, n−k).ppf(1−ε)
    want_lo = 0.0 if k == 0 else beta.ppf(eps, k, n - k + 1)
    want_hi = 1.0 if k == n else beta.isf(eps, k + 1, n - k)
    assert lo == pytest.approx(want_lo, rel=1e-8, abs=1e-15)
    assert hi == pytest.approx(want_hi, rel=1e-8, abs=1e-15)


def test_rule_of_three():
    # No errors in n: the 95% upper bound is about 3/n (Hanley & Lippman-Hand 1983).
    assert qkd.clopper_pearson(0, 10_000, 0.05)[1] == pytest.approx(3 / 10_000, rel=2e-3)


def test_estimate_carries_its_bounds():
    q = qkd.estimate_qber(30, 1000, epsilon=1e-6)
    assert q.lower < q.estimate == 0.03 < q.upper
    assert q.to_dict()["upper"] == q.upper


def test_no_bits_gives_the_vacuous_bound():
    q = qkd.estimate_qber(0, 0)
    assert math.isnan(q.estimate) and q.upper == 1.0


@pytest.mark.parametrize("k, n, eps, match", [
    (5, 3, 0.1, "0 <= k <= n"), (-1, 3, 0.1, "0 <= k <= n"), (0, 10, 0.0, "epsilon"), (0, 10, 1.5, "epsilon"),
])
def test_bad_arguments(k, n, eps, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        qkd.clopper_pearson(k, n, eps)
