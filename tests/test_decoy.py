"""Weak coherent pulses as circuits, photon-number splitting, decoy analysis and sessions.

Statistical tests use fixed seeds; tolerances are stated as standard deviations of the binomial
counts (4 sd unless said otherwise) or of the bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits import AuthKeyPool, ConfigurationError, PostProcessingConfig
from qkd_circuits.decoy import NO_SINGLE_PHOTONS, analyse, link_models, run_decoy_session, simulate_point
from qkd_circuits.analysis.keyrate import PRESETS, error_gain, gain, key_rate
from qkd_circuits.quantum.models import Channel
from qkd_circuits.quantum.wcp import (PhotonNumberSplitting, WeakCoherentSource, build_pulse_circuit,
                                      run_wcp_exchanges)

GYS = PRESETS["GYS"]
SOURCE = WeakCoherentSource.vacuum_weak(0.5, 0.1, p_signal=0.6, p_decoy=0.3)


def _within(observed: float, expected: float, n: int, sds: float = 4.0) -> bool:
    sd = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
    return abs(observed - expected) <= sds * sd


@pytest.fixture(scope="module")
def honest_20km():
    channel, detector = link_models(20)
    return run_wcp_exchanges(1_000_000, source=SOURCE, channel=channel, detector=detector, seed=21)


@pytest.fixture(scope="module")
def honest_40km():
    """1.5M pulses over 40 km from the default source (what simulate_point(40, seed=102) sends)."""
    channel, detector = link_models(40)
    return run_wcp_exchanges(1_500_000, source=WeakCoherentSource.vacuum_weak(0.5, 0.1), channel=channel,
                             detector=detector, seed=102)


@pytest.fixture(scope="module")
def pns_40km():
    channel, detector = link_models(40)
    eve = PhotonNumberSplitting.matching(0.5, channel, detector)
    return eve, run_wcp_exchanges(1_000_000, source=SOURCE, channel=channel, detector=detector, eve=eve, seed=41)


def test_pulse_circuit_has_one_qubit_per_photon_in_the_same_state():
    qc = build_pulse_circuit(3, channel=Channel(misalignment=0.02))
    assert qc.num_qubits == 3 + 3 + 3  # photons, their loss flags, dark/dark_bit/tie
    ops = qc.count_ops()
    alice = [inst for inst in qc.data if inst.operation.name == "ry" and inst.operation.params[0].__class__.__name__ == "Parameter"
             and str(inst.operation.params[0]) == "alice_theta"]
    assert len(alice) == 3 and ops["measure"] == qc.num_qubits
    pns = build_pulse_circuit(3, eve=PhotonNumberSplitting())
    assert "eve_theta" in {p.name for p in pns.parameters} and "eve_result" in [c.name for c in pns.cregs]
    assert "eve_theta" not in {p.name for p in build_pulse_circuit(1, eve=PhotonNumberSplitting()).parameters}


def test_photon_numbers_are_poisson_per_intensity(honest_20km):
    r = honest_20km
    for label, mu in SOURCE.intensities.items():
        n = r.photons[r.label_mask(label)]
        assert abs(n.mean() - mu) <= 4 * math.sqrt(max(mu, 1e-9) / n.size)
        if mu > 0:  # P(n >= 2) matches the Poisson tail
            assert _within(float((n >= 2).mean()), 1 - (1 + mu) * math.exp(-mu), n.size)
    assert _within(float(r.label_mask("decoy").mean()), 0.3, len(r))


def test_gains_and_errors_match_the_analytic_model(honest_20km):
    r = honest_20km
    eta = float(GYS.transmittance(20))
    stats = analyse(r).stats
    for label in ("signal", "decoy"):
        s = stats[label]
        q = float(gain(s.mu, eta, GYS))
        assert _within(s.gain, q, s.pulses), (label, s.gain, q)
        e = float(error_gain(s.mu, eta, GYS)) / q
        assert _within(s.qber, e, s.sifted), (label, s.qber, e)
    assert stats["vacuum"].clicks <= 3  # Y_0 = 1.7e-6 over ~10^5 vacuum pulses


def test_pns_is_invisible_to_the_signal_statistics(pns_40km):
    eve, r = pns_40km
    assert eve.single_pass == 0.0 and 0 < eve.multi_pass < 1  # at 40 km Eve can block every single photon
    eta = float(GYS.transmittance(40))
    s = analyse(r).stats["signal"]
    assert _within(s.gain, float(gain(0.5, eta, GYS)), s.pulses)  # the click rate looks honest
    assert s.qber < 0.05  # and so does the error rate
    sifted = r.label_mask("signal") & r.sifted_mask()
    known = r.eve_known[sifted] & (r.eve_results[sifted] == r.alice_bits[sifted])
    assert known.mean() > 0.95  # ... while Eve holds almost every sifted bit (dark counts are the rest)


def test_decoys_catch_pns(pns_40km, honest_40km):
    _, r = pns_40km
    eta = float(GYS.transmittance(40))
    a = analyse(r, u_alpha=0.0)
    d = a.stats["decoy"]
    assert d.gain < 0.4 * float(gain(0.1, eta, GYS))  # the decoy's click rate collapses
    assert not a.estimate.valid and a.rate == 0.0  # no single photons can be certified
    # The honest link of the same length, analysed the same way (asymptotic bounds), passes.
    honest = analyse(honest_40km, u_alpha=0.0)
    assert honest.estimate.valid and honest.rate > 0


def _check_point(p: dict) -> None:
    # The bootstrap sd of each point (from its own counts, so it scales with the pulses) is the
    # error bar: 3 sd allowed.
    assert p["rate"] > 0 and p["rate_sd"] > 0
    assert abs(p["rate"] - p["analytic"]) <= 3 * p["rate_sd"], p


def _check_points_on_the_curve(distances, pulses: int, seeds) -> None:
    for distance, seed in zip(distances, seeds):
        _check_point(simulate_point(distance, mu=0.5, nu=0.1, pulses=pulses, seed=seed, bootstrap=150))


def test_simulated_points_land_on_the_analytic_curve(honest_40km):
    # Two distances, 1.5M pulses each (the rate's bootstrap sd is ~15% of it at 0 km, ~30% at 40 km).
    _check_points_on_the_curve((0.0,), 1_500_000, seeds=(100,))
    # At 40 km the pulses simulate_point(40, ..., seed=102) would send: the same source, link and
    # seed, so the same record; analysed as simulate_point does.
    a = analyse(honest_40km, u_alpha=0.0, bootstrap=150, seed=103)
    _check_point({"rate": a.rate, "rate_sd": a.rate_sd,
                  "analytic": key_rate(40.0, "decoy-vacuum-weak", GYS, mu=0.5, nu=0.1).rate})


@pytest.mark.slow
def test_simulated_points_land_on_the_analytic_curve_at_four_distances():
    # Four distances, 3M pulses each: tighter error bars, out to 60 km.
    _check_points_on_the_curve((0.0, 20.0, 40.0, 60.0), 3_000_000, seeds=(100, 101, 102, 103))


def test_decoy_session_makes_identical_keys_and_pns_aborts():
    channel, detector = link_models(0)
    source = WeakCoherentSource.vacuum_weak(0.5, 0.1, p_signal=0.7, p_decoy=0.2)
    # The earlier estimate, named explicitly (the default is the composable lim2014: see
    # tests/test_decoy_protocol.py); at 2.5M pulses only the estimate claims a key here.
    result = run_decoy_session(2_500_000, source=source, channel=channel, detector=detector, seed=3, u_alpha=3.0,
                               method="decoy-vacuum-weak")
    d = result.to_dict()
    assert not d["aborted"], d["abort_reason"]
    assert result.alice_key is not None and result.alice_key.matches(result.bob_key)
    kl = d["report"]["key_length"]
    assert kl["formula"].startswith("GLLP with decoy bounds")
    assert 0 < kl["single_photon_fraction"] < 1 and kl["mu"] == 0.0
    assert kl["qber_tolerance"] == d["decoy"]["estimate"]["e1"]  # the phase-error bound from the decoys
    # The same link under PNS, decoys on: aborted before post-processing.
    channel, detector = link_models(40)
    eve = PhotonNumberSplitting.matching(0.5, channel, detector)
    alice_pool = AuthKeyPool.fresh(simulation=True)
    bob_pool = alice_pool.copy()
    before = (alice_pool.available_bits, bob_pool.available_bits)
    # 400,000 pulses: the Y_1 lower bound is already far below 0 (about -3e-3, as at 10^6 pulses).
    caught = run_decoy_session(400_000, channel=channel, detector=detector, eve=eve, seed=4,
                               alice_pool=alice_pool, bob_pool=bob_pool, method="decoy-vacuum-weak")
    assert caught.aborted and caught.abort_reason == NO_SINGLE_PHOTONS
    assert caught.alice_key is None and caught.bb84 is None
    assert (alice_pool.available_bits, bob_pool.available_bits) == before  # no pad bits spent
    # The composable default reaches the same verdict inside the protocol, from the counts the
    # parties exchanged, before error correction: no parity disclosed, no pad bits spent.
    # (The same pulses, post-processed by the parties as run_decoy_session's default does.)
    from qkd_circuits.postprocessing.decoy_rounds import DecoyProtocol
    from qkd_circuits.session import postprocess

    config = PostProcessingConfig(decoy=DecoyProtocol.from_source(caught.record.source))
    composable = postprocess(caught.record, config, alice_pool=alice_pool, bob_pool=bob_pool)
    assert composable.report.aborted and composable.report.abort_reason == NO_SINGLE_PHOTONS
    assert composable.alice_key is None and composable.bob_key is None and composable.report.cascade is None
    assert composable.report.decoy_key_length.length == 0
    assert (alice_pool.available_bits, bob_pool.available_bits) == before


def _check_naive_session_under_pns(distance_km: float, mu: float, pulses: int) -> None:
    channel, detector = link_models(distance_km)
    eve = PhotonNumberSplitting.matching(mu, channel, detector)
    assert eve.single_pass == 0.0  # the link is lossy enough for Eve to block every single photon
    source = WeakCoherentSource.vacuum_weak(mu, 0.1, p_signal=0.9, p_decoy=0.05)
    # A 30% sample: near the optimal share at ~10^4 sifted bits (finite_key.optimal_sample_size),
    # so fewer pulses make a key than with 10%.
    naive = run_decoy_session(pulses, source=source, channel=channel, detector=detector, eve=eve, seed=5,
                              method="assume-single-photons", config=PostProcessingConfig(sample_fraction=0.3),
                              replenish_bits=256)
    assert not naive.to_dict()["aborted"] and naive.alice_key is not None
    assert naive.eve_known_fraction > 0.95
    # The same pulses analysed with their decoys (as run_decoy_session's default method does; its
    # abort path is tested above): no single photons can be certified, so no key would be made.
    est = analyse(naive.record, "decoy-vacuum-weak", u_alpha=5.0).estimate
    assert not est.valid or est.q_mu <= 0


def test_without_decoys_pns_yields_a_key_eve_knows():
    # μ = 0.8 over 26 km: PNS already hides there (single_pass 0), and the signal clicks 3x as
    # often as μ = 0.5 at 40 km, so 2.4M pulses give the ~10^4 sifted bits a finite-size key needs.
    _check_naive_session_under_pns(26, 0.8, 2_400_000)


@pytest.mark.slow
def test_without_decoys_pns_yields_a_key_eve_knows_at_40_km():
    # μ = 0.5 (as in the rest of this file) at 40 km: 12M pulses for the same sifted bits.
    _check_naive_session_under_pns(40, 0.5, 12_000_000)


@pytest.mark.parametrize("call, match", [
    (lambda: WeakCoherentSource({"decoy": 0.1}, {"decoy": 1.0}), "needs a 'signal' intensity"),
    (lambda: WeakCoherentSource({"signal": 0.5}, {"signal": 0.5}), "must sum to 1"),
    (lambda: WeakCoherentSource({"signal": -0.5}, {"signal": 1.0}), "mean photon number"),
    (lambda: WeakCoherentSource({"signal": 0.5}, {"decoy": 1.0}), "name the same labels"),
    (lambda: WeakCoherentSource.vacuum_weak(0.1, 0.2), "must be weaker than the signal"),
    (lambda: PhotonNumberSplitting(single_pass=1.5), "single_pass must be a probability"),
    (lambda: build_pulse_circuit(-1), "photons must be a whole number"),
    (lambda: run_wcp_exchanges(0), "pulses must be a whole number"),
    (lambda: run_wcp_exchanges(10, channel=Channel(depolarizing=0.1)), "depolarizing/dephasing"),
    (lambda: run_decoy_session(1000, method="trust-me"), "method must be one of"),
    (lambda: analyse(run_wcp_exchanges(1000, seed=1)), "needs 'decoy' and 'vacuum'"),
    (lambda: PostProcessingConfig(single_photon=(1.5, 0.1)), "single_photon must be"),
])
def test_misuse(call, match):
    with pytest.raises((ConfigurationError, ValueError), match=match):
        call()


def test_unseeded_choices_come_from_secrets():
    r1 = run_wcp_exchanges(2000)
    r2 = run_wcp_exchanges(2000)
    assert r1.seed is None and not np.array_equal(r1.alice_bits, r2.alice_bits)
    assert repr(r1) == f"WcpRecord(pulses=2000, clicks={int(r1.clicked.sum())}, seed=None)"  # no bits in reprs
