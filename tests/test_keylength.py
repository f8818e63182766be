"""Key-length formulas: a table with sources, and their limits."""

from __future__ import annotations

import math

import pytest

import qkd_circuits as qkd


def test_binary_entropy_values():
    assert qkd.binary_entropy(0.0) == 0.0
    assert qkd.binary_entropy(0.5) == 1.0
    assert qkd.binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-4)


def test_shor_preskill_threshold_is_eleven_percent():
    # Shor & Preskill, PRL 85, 441 (2000): 1 − 2h(Q) = 0 at Q ≈ 11.0%.
    assert qkd.shor_preskill_rate(0.1100) > 0
    assert qkd.shor_preskill_rate(0.1101) == 0
    assert qkd.shor_preskill_rate(0.0) == 1.0
    assert qkd.shor_preskill_rate(0.05, f=1.2) == pytest.approx(1 - 2.2 * qkd.binary_entropy(0.05))


def test_finite_key_terms_follow_tlgr_2012():
    n, k, q, leak = 10**6, 10**5, 0.02, 150_000
    kl = qkd.finite_key_length(n, k, q, leak, eps_sec=1e-10, eps_cor=1e-15)
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2 / 1e-10))
    assert kl.mu == pytest.approx(mu)
    assert kl.security_term == pytest.approx(math.log2(2 / (1e-20 * 1e-15)))
    assert kl.length == math.floor(n - n * qkd.binary_entropy(q + mu) - leak - kl.security_term)


def test_finite_key_approaches_the_asymptotic_rate():
    q, f = 0.03, 1.0
    rates = [qkd.finite_key_length(n, n // 10, q, round(f * n * qkd.binary_entropy(q))).length / n
             for n in (10**4, 10**6, 10**8, 10**10)]
    assert rates == sorted(rates)
    assert rates[-1] == pytest.approx(qkd.shor_preskill_rate(q, f), abs=2e-3)


def test_no_key_from_small_blocks_or_high_error():
    assert qkd.finite_key_length(1000, 100, 0.02, 200).length == 0
    n = 10**6  # past the Shor–Preskill threshold, with an error correction that costs 1.1·n·h(Q)
    assert qkd.finite_key_length(n, n // 10, 0.12, round(1.1 * n * qkd.binary_entropy(0.12))).length == 0


@pytest.mark.parametrize("args, match", [
    ((0, 10, 0.01, 0), "n >= 1"), ((10, 0, 0.01, 0), "k >= 1"), ((10, 10, 1.5, 0), "qber_tolerance"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        qkd.finite_key_length(*args)


def test_variable_length_rounds_up_to_the_grid_and_pays_for_the_union_bound():
    from qkd_circuits.analysis.finite_key import variable_key_length

    v = variable_key_length(10**6, 10**5, 0.0213, 150_000)
    assert v.qber_tolerance == pytest.approx(0.022)
    assert v.eps_sec == pytest.approx(1e-10 / 500)
    fixed = qkd.finite_key_length(10**6, 10**5, 0.022, 150_000)
    assert 0 < fixed.length - v.length < 0.02 * fixed.length  # the union bound costs little
    assert variable_key_length(10**6, 10**5, 0.0, 0).qber_tolerance == pytest.approx(0.001)
