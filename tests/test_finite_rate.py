"""analysis.finite_rate: the link's expected counts and the finite-key rate curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits.analysis import finite_decoy as fd
from qkd_circuits.analysis import finite_rate as fr
from qkd_circuits.analysis import keyrate as kr
from qkd_circuits.exceptions import ConfigurationError

GYS, LIM = kr.PRESETS["GYS"], kr.PRESETS["Lim2014"]
DEFAULT = dict(intensities={"signal": 0.5, "decoy": 0.1, "vacuum": 0.0},
               probabilities={"signal": 0.7, "decoy": 0.2, "vacuum": 0.1})


def test_presets_keep_gys_and_add_lim2014():
    assert GYS.afterpulse == 0.0 and GYS.y0 == 1.7e-6 and GYS.eta_bob == 0.045
    assert (LIM.eta_bob, LIM.y0, LIM.afterpulse, LIM.alpha_db_per_km, LIM.e_detector, LIM.f_ec) == \
        (0.10, 1.2e-6, 0.04, 0.2, 0.005, 1.16)
    with pytest.raises(ConfigurationError, match="afterpulse is a probability"):
        kr.LinkParameters(afterpulse=1.5)


@pytest.mark.parametrize("distance", [0.0, 40.0, 120.0])
def test_link_model_is_ma_et_al_without_afterpulses(distance):
    # D_k = 1 - (1 - Y0) e^{-eta k} differs from Q_k = Y0 + 1 - e^{-eta k} by Y0 (1 - e^{-eta k}) only.
    mu = np.array([0.0, 0.1, 0.5, 1.0])
    eta = float(GYS.transmittance(distance))
    d, r, e = fr.link_probabilities(GYS, distance, mu)
    q, eq = kr.gain(mu, eta, GYS), kr.error_gain(mu, eta, GYS)
    assert np.array_equal(d, r)
    np.testing.assert_allclose(d, q - GYS.y0 * (1 - np.exp(-eta * mu)), rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(d - q) <= GYS.y0 * eta * mu + 1e-15)
    np.testing.assert_allclose(e, eq, rtol=1e-12, atol=1e-15)


def test_afterpulses_add_clicks_and_half_errors():
    d, r, e = fr.link_probabilities(LIM, 30.0, 0.5)
    d0, r0, e0 = fr.link_probabilities(LIM.with_(afterpulse=0.0), 30.0, 0.5)
    assert d == pytest.approx(d0, rel=1e-15) and r == pytest.approx(1.04 * d, rel=1e-12)
    assert e - e0 == pytest.approx(0.02 * d, rel=1e-12)
    # The printed form: the channel transmittance (without eta_Bob) in the misalignment term.
    _, _, e_ch = fr.link_probabilities(LIM, 30.0, 0.5, misalignment="channel")
    eta_ch = 10 ** (-0.2 * 30.0 / 10)
    assert e_ch == pytest.approx(0.5 * LIM.y0 + 0.005 * (1 - math.exp(-eta_ch * 0.5)) + 0.02 * d, rel=1e-12)


def test_expected_counts_split_by_basis_and_intensity():
    c = fr.expected_counts(GYS, 25.0, q_key=0.8, pulses=1e9, **DEFAULT)
    eta = float(GYS.transmittance(25.0))
    d, _, e = fr.link_probabilities(GYS, 25.0, 0.5)
    assert c.key.detections["signal"] == pytest.approx(1e9 * 0.64 * 0.7 * d, rel=1e-12)
    assert c.test.errors["signal"] == pytest.approx(1e9 * 0.04 * 0.7 * e, rel=1e-12)
    assert c.key.errors["vacuum"] / c.key.detections["vacuum"] == pytest.approx(0.5, rel=1e-9)
    assert c.key.m / c.key.n == pytest.approx(c.test.m / c.test.n, rel=1e-12)
    assert eta > 0
    # A fixed key block: the pulses follow from n_X.
    c2 = fr.expected_counts(GYS, 25.0, q_key=0.8, n_key=1e6, **DEFAULT)
    assert c2.key.n == pytest.approx(1e6, rel=1e-12)


def test_a_fixed_point_reproduces_the_analysis_on_its_counts():
    p = fr.finite_key_rate(25.0, "lim2014", GYS, pulses=1e9, q_key=0.5, **DEFAULT)
    assert not p.optimised and p.pulses == 1e9
    c = fr.expected_counts(GYS, 25.0, q_key=0.5, pulses=1e9, **DEFAULT)
    leak = GYS.f_ec * fd.binary_entropy(c.key.m / c.key.n) * c.key.n
    kl = fd.lim2014(c, leak_ec=leak, eps_sec=1e-10, eps_cor=1e-15)
    assert p.length == kl.length > 0 and p.rate == pytest.approx(kl.length / 1e9, rel=1e-12)


@pytest.mark.parametrize("method", ["lim2014", "rusca2018"])
def test_ledger_adds_up_to_eps_sec(method):
    p = fr.finite_key_rate(50.0, method, LIM, n_key=1e7)
    assert p.eps_sec == 1e-10 and p.length > 0
    assert p.key_length.ledger.total == pytest.approx(p.eps_sec, rel=1e-12)
    q = fr.finite_key_rate(50.0, method, LIM, n_key=1e7, kappa=1e-15)
    # Lim et al.'s eps_sec = kappa * length, solved as a fixed point.
    assert q.eps_sec == pytest.approx(1e-15 * q.length, rel=1e-12)
    assert q.key_length.ledger.total == pytest.approx(q.eps_sec, rel=1e-12)


@pytest.mark.parametrize("method", ["lim2014", "rusca2018", "bb84-single-photon"])
def test_rates_grow_with_the_block_size(method):
    rates = [fr.finite_key_rate(80.0, method, LIM, n_key=n).rate for n in (1e5, 1e7, 1e9)]
    assert 0 < rates[0] < rates[1] < rates[2], rates
    pulses = [fr.finite_key_rate(40.0, method, LIM, pulses=n).rate for n in (1e8, 1e10)]
    assert 0 < pulses[0] < pulses[1], pulses


@pytest.mark.parametrize("distance", [0.0, 60.0, 120.0])
def test_finite_rates_stay_below_the_asymptotic_limit(distance):
    limit = fr.asymptotic_rate(LIM, distance)
    for method in ("lim2014", "rusca2018"):
        p = fr.finite_key_rate(distance, method, LIM, n_key=1e9, sampling="fung")
        assert 0 < p.rate < limit
        assert p.rate > 0.3 * limit  # and not far below it at n_X = 1e9


def test_asymptotic_limit_is_keyrate_decoy_infinite_without_afterpulses():
    # q_key^2 = 1/2 is keyrate's sifting; the only extra term is the vacuum's e^-mu Y0 q^2.
    for distance in (0.0, 50.0, 100.0):
        a = fr.asymptotic_rate(GYS, distance, q_key=math.sqrt(0.5))
        b = kr.key_rate(distance, "decoy-infinite", GYS).rate
        assert 0 <= a - b <= GYS.y0


def test_lim2014_figure_ratio_and_reach():
    # Lim et al. 2014, Fig. 1 (dedicated fibre, kappa = 1e-15): at 100 km the n_X = 1e9 rate is
    # "about 1.75" times the n_X = 1e7 rate.
    big = fr.finite_key_rate(100.0, "lim2014", LIM, n_key=1e9, kappa=1e-15, sampling="fung")
    small = fr.finite_key_rate(100.0, "lim2014", LIM, n_key=1e7, kappa=1e-15, sampling="fung", start=big)
    assert 1.6 < big.rate / small.rate < 1.8
    # The printed channel-transmittance misalignment makes 5% errors: no key at all for n_X = 1e4.
    assert fr.finite_key_rate(0.0, "lim2014", LIM, n_key=1e4, kappa=1e-15, sampling="fung",
                              misalignment="channel").length == 0
    assert fr.finite_key_rate(100.0, "lim2014", LIM, n_key=1e4, kappa=1e-15, sampling="fung").length > 0


def test_curve_and_reach():
    curve = fr.finite_key_rate_curve([0.0, 100.0, 300.0], "rusca2018", LIM, n_key=1e6)
    rates = [p.rate for p in curve.points]
    assert rates[0] > rates[1] > 0 and rates[2] == 0
    assert 100.0 < curve.max_distance_km < 300.0
    d = curve.to_dict()
    assert d["n_key"] == 1e6 and d["pulses"] is None and len(d["points"]) == 3
    assert d["points"][0]["key_length"]["ledger"]["terms"]


def test_single_photon_point_uses_tlgr():
    p = fr.finite_key_rate(20.0, "bb84-single-photon", GYS, n_key=1e6)
    kl = p.key_length
    assert kl.n == 10**6 and p.sample == kl.k and p.intensities == {}
    assert p.pulses == pytest.approx((math.sqrt(kl.n) + math.sqrt(kl.k)) ** 2 /
                                     (1 - (1 - GYS.y0) * (1 - float(GYS.transmittance(20.0)))), rel=1e-9)


@pytest.mark.parametrize("call, match", [
    (lambda: fr.finite_key_rate(-1.0, n_key=1e6), "distance_km must be a finite number >= 0"),
    (lambda: fr.finite_key_rate(10.0, n_key=1e6, pulses=1e9), "exactly one of n_key"),
    (lambda: fr.finite_key_rate(10.0), "exactly one of n_key"),
    (lambda: fr.finite_key_rate(10.0, n_key=0), "n_key must be a finite number >= 1"),
    (lambda: fr.finite_key_rate(10.0, "rusca2018", GYS, pulses=1e9, q_key=0.5, intensities={"a": 0.3, "b": 0.3},
                                probabilities={"a": 0.7, "b": 0.3}), "μ1 > μ2 > 0"),
    (lambda: fr.finite_key_rate(10.0, "lim2014", GYS, pulses=1e9, q_key=0.5,
                                intensities={"a": 0.5, "b": 0.45, "c": 0.1},
                                probabilities={"a": 0.7, "b": 0.2, "c": 0.1}), "μ1 > μ2 \\+ μ3"),
    (lambda: fr.finite_key_rate(10.0, "lim2014", GYS, pulses=1e9, q_key=0.5), "together"),
    (lambda: fr.finite_key_rate(10.0, "decoy-infinite", n_key=1e6), "method must be one of"),
    (lambda: fr.finite_key_rate(10.0, n_key=1e6, eps_sec=1e-10, kappa=1e-15), "not both"),
    (lambda: fr.finite_key_rate(10.0, n_key=1e6, misalignment="fibre"), "misalignment must be one of"),
    (lambda: fr.finite_key_rate(10.0, n_key=1e6, mu_weak=0.3), "mu_weak"),
    (lambda: fr.expected_counts(GYS, 1.0, q_key=1.0, pulses=1e6, **DEFAULT), "q_key"),
    (lambda: fr.max_finite_distance_km(n_key=1e6, pulses=1e6), "exactly one of n_key"),
])
def test_misuse_raises(call, match):
    with pytest.raises(ConfigurationError, match=match):
        call()
