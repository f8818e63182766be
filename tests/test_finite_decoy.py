"""The composable decoy-state bounds: their ε ledgers, their limits, and their misuse."""

from __future__ import annotations

import math

import pytest

from qkd_circuits.analysis import finite_decoy as fd
from qkd_circuits.analysis.finite_key import finite_key_length
from qkd_circuits.analysis.keyrate import PRESETS

GYS = PRESETS["GYS"]
MU = {"s": 0.5, "d": 0.1, "v": 0.0}
P = {"s": 0.7, "d": 0.2, "v": 0.1}


def expected(pulses: float, distance_km: float = 0.0, *, mu=MU, p=P, q=0.5, key_errors=False) -> fd.DecoyCounts:
    """Expected counts of the GYS link (the analytic model of analysis.keyrate), symmetric bases."""
    eta = float(GYS.transmittance(distance_km))
    det = {k: pulses * p[k] * (GYS.y0 + 1 - math.exp(-eta * m)) for k, m in mu.items()}
    err = {k: pulses * p[k] * (GYS.y0 / 2 + GYS.e_detector * (1 - math.exp(-eta * m))) for k, m in mu.items()}
    key = fd.BasisCounts({k: v * q * q for k, v in det.items()},
                         {k: v * q * q for k, v in err.items()} if key_errors else None)
    test = fd.BasisCounts({k: v * (1 - q) ** 2 for k, v in det.items()}, {k: v * (1 - q) ** 2 for k, v in err.items()})
    return fd.DecoyCounts(mu, p, key, test)


def test_hoeffding_and_the_two_sampling_margins():
    assert fd.hoeffding_delta(100, 0.01) == pytest.approx(math.sqrt(50 * math.log(100)))
    # Serfling's margin at failure probability ε² is TLGR's μ with ln(1/ε): with ε = ε_sec/4 it
    # is the finite-key module's μ (arXiv:1103.4130, Supplementary Note 2).
    n, k, eps_sec = 10**6, 10**5, 1e-10
    assert fd.gamma_serfling((eps_sec / 4) ** 2, n, k) == pytest.approx(finite_key_length(n, k, 0.02, 0).mu, rel=1e-12)
    # Lim et al.'s γ shrinks with the sets and grows as the failure probability falls.
    assert fd.gamma_fung(1e-12, 0.02, 1e6, 1e6) < fd.gamma_fung(1e-12, 0.02, 1e4, 1e4)
    assert fd.gamma_fung(1e-12, 0.02, 1e5, 1e5) > fd.gamma_fung(1e-6, 0.02, 1e5, 1e5)
    assert fd.gamma_serfling(1e-10, 0, 10) == math.inf


@pytest.mark.parametrize("method, parts, labels", [("lim2014", 21, MU), ("rusca2018", 19, {"s": 0.5, "d": 0.15})])
def test_the_epsilon_ledger_adds_up_to_eps_sec(method, parts, labels):
    p = P if method == "lim2014" else {"s": 0.8, "d": 0.2}
    counts = expected(1e10, mu=labels, p=p, key_errors=True)
    kl = fd.decoy_key_length(counts, method, leak_ec=0.0, eps_sec=3e-9, eps_cor=1e-15)
    assert kl.method == method and kl.length > 0
    assert fd.terms_total(kl.ledger.terms) == parts
    assert math.isclose(kl.ledger.total, 3e-9, rel_tol=1e-12)
    assert all(t.epsilon == pytest.approx(3e-9 / parts) for t in kl.ledger.terms)
    assert kl.security_bits == pytest.approx(6 * math.log2(parts / 3e-9))
    assert kl.verification_bits == pytest.approx(math.log2(2 / 1e-15))  # the paper's term when none is given
    d = kl.to_dict()
    assert d["ledger"]["total_secrecy"] == kl.ledger.total and len(d["ledger"]["terms"]) == 6


def test_with_very_many_pulses_the_bounds_approach_the_single_photon_truth():
    # Infinite-decoy truth of the GYS model: Y1 = Y0 + η, e1 = (Y0/2 + e_det η)/Y1.
    pulses = 1e16
    kl = fd.lim2014(expected(pulses), leak_ec=0.0)
    eta = float(GYS.transmittance(0.0))
    y1 = GYS.y0 + eta
    tau1 = sum(P[k] * m * math.exp(-m) for k, m in MU.items())
    true_singles = pulses * 0.25 * tau1 * y1
    e1 = (GYS.y0 / 2 + GYS.e_detector * eta) / y1
    # A vacuum + weak decoy bound is not tight (ν = 0.1 is not 0): within 6% / 0.6 points.
    assert 0.94 * true_singles < kl.s_key_1 <= true_singles * 1.0001
    assert e1 <= kl.phase_error < e1 + 0.006
    assert kl.phase_error - kl.phase_error_observed < 1e-4  # the sampling margin vanishes


def test_the_key_fraction_grows_with_the_pulses_and_small_rounds_get_nothing_with_a_reason():
    fractions = []
    for pulses in (1e7, 1e8, 1e9, 1e10):
        c = expected(pulses)
        kl = fd.lim2014(c, leak_ec=1.22 * c.key.n * 0.04)
        fractions.append(kl.length / pulses)
    assert fractions == sorted(fractions) and fractions[0] == 0.0 < fractions[1]
    tiny = fd.lim2014(expected(1e6), leak_ec=0.0)
    assert tiny.length == 0 and "single-photon" in tiny.reason
    noisy = fd.lim2014(expected(1e9), leak_ec=1e9)
    assert noisy.length == 0 and "does not cover error correction" in noisy.reason


def test_serfling_costs_a_little_key_against_the_papers_gamma():
    c = expected(1e10)
    fung = fd.lim2014(c, leak_ec=0.0, sampling="fung")
    serf = fd.lim2014(c, leak_ec=0.0, sampling="serfling")
    assert 0.9 * fung.length < serf.length < fung.length


def test_one_decoy_bounds_the_vacuum_from_above_with_the_key_basis_errors():
    two = {"s": 0.5, "d": 0.15}
    c = expected(1e10, mu=two, p={"s": 0.8, "d": 0.2}, key_errors=True)
    kl = fd.rusca2018(c, leak_ec=0.0)
    assert kl.s_key_0_upper > kl.s_key_0 >= 0 and kl.length > 0
    with pytest.raises(ValueError, match="error counts of both bases"):
        fd.rusca2018(expected(1e10, mu=two, p={"s": 0.8, "d": 0.2}), leak_ec=0.0)


@pytest.mark.parametrize("make, match", [
    (lambda: fd.lim2014(expected(1e9, mu={"s": 0.5, "d": 0.15}, p={"s": 0.8, "d": 0.2}), leak_ec=0),
     "lim2014 needs three intensities"),
    (lambda: fd.lim2014(expected(1e9, mu={"s": 0.3, "d": 0.2, "v": 0.15}), leak_ec=0), "μ1 > μ2 \\+ μ3"),
    (lambda: fd.rusca2018(expected(1e9, key_errors=True), leak_ec=0), "rusca2018 needs two intensities"),
    (lambda: fd.lim2014(expected(1e9), leak_ec=-1), "leak_ec must be a finite number"),
    (lambda: fd.lim2014(expected(1e9), leak_ec=0, sampling="exact"), "sampling must be one of"),
    (lambda: fd.lim2014(expected(1e9), leak_ec=0, eps_sec=0.0), "eps_sec must be in"),
    (lambda: fd.decoy_key_length(expected(1e9), "ma2005", leak_ec=0), "method must be one of"),
    (lambda: fd.DecoyCounts(MU, {"s": 0.7, "d": 0.2, "v": 0.2}, fd.BasisCounts(dict.fromkeys(MU, 1)),
                            fd.BasisCounts(dict.fromkeys(MU, 1), dict.fromkeys(MU, 0))), "sum to 1"),
    (lambda: fd.DecoyCounts(MU, P, fd.BasisCounts({"s": 1, "d": 1}), fd.BasisCounts(dict.fromkeys(MU, 1))),
     "must name every intensity"),
    (lambda: fd.DecoyCounts(MU, P, fd.BasisCounts(dict.fromkeys(MU, 1)),
                            fd.BasisCounts(dict.fromkeys(MU, 1), dict.fromkeys(MU, 2))), "more errors than detections"),
    (lambda: fd.DecoyCounts(MU, P, fd.BasisCounts({"s": -1, "d": 1, "v": 1}), fd.BasisCounts(dict.fromkeys(MU, 1))),
     "finite count >= 0"),
])
def test_misuse_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_counts_must_be_decoy_counts():
    with pytest.raises(TypeError, match="counts must be DecoyCounts"):
        fd.lim2014({"s": 1}, leak_ec=0)
