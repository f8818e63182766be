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
    # arXiv:1103.4130, Eq. (2) and Supplementary Note 1 (ε = ε_sec/4 inside μ, ε̃ = ε_sec/2):
    # ln(4/ε_sec) in μ and log2(2/(ε_sec² ε_cor)) as the security term.
    n, k, q, leak = 10**6, 10**5, 0.02, 150_000
    kl = qkd.finite_key_length(n, k, q, leak, eps_sec=1e-10, eps_cor=1e-15)
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4 / 1e-10))
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


def test_the_optimal_sample_beats_a_fixed_tenth_and_is_a_maximum():
    from qkd_circuits.analysis.finite_key import optimal_length_at, optimal_sample_size

    # At N = 10^4 sifted bits and Q = 2.5% a 10% sample leaves little key; the optimum is several
    # times longer, and no sample size on a coarse grid does better than the one returned.
    k, kl = optimal_sample_size(10_000, 0.025)
    fixed = optimal_length_at(10_000, 1_000, 0.025)
    assert kl.length > 3 * fixed > 0
    assert all(optimal_length_at(10_000, j, 0.025) <= kl.length for j in range(100, 9_900, 97))
    # Larger blocks want a smaller share for estimation.
    assert optimal_sample_size(10**6, 0.025)[0] / 10**6 < k / 10_000


def test_minimum_sifted_bits_is_the_threshold_of_a_key():
    from qkd_circuits.analysis.finite_key import minimum_sifted_bits, optimal_length_at

    n = minimum_sifted_bits(0.02, sample_fraction=0.1)
    k = lambda size: max(1, math.ceil(0.1 * size))
    assert optimal_length_at(n, k(n), 0.02) > 0
    assert optimal_length_at(int(n * 0.99), k(int(n * 0.99)), 0.02) == 0  # to the 0.1% the search resolves
    assert minimum_sifted_bits(0.02) < n  # the optimal sample needs fewer bits
    assert minimum_sifted_bits(0.12) is None  # past what f = 1.2 error correction allows


@pytest.mark.parametrize("call, match", [
    (lambda f: f.optimal_sample_size(1, 0.01), "sifted must be a whole number >= 2"),
    (lambda f: f.optimal_sample_size(100, 0.6), "qber must be in"),
    (lambda f: f.optimal_sample_size(100, 0.01, f_ec=0.9), "f_ec must be finite and >= 1"),
    (lambda f: f.minimum_sifted_bits(0.01, sample_fraction=1.0), "sample_fraction must be in"),
    (lambda f: f.optimal_length_at(100, 100, 0.01), "need 1 <= k < sifted"),
])
def test_design_helpers_refuse_bad_input(call, match):
    from qkd_circuits.analysis import finite_key

    with pytest.raises(ValueError, match=match):
        call(finite_key)
