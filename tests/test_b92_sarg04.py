"""B92 and SARG04 as circuits, against the theory of qkd_circuits.analysis.sarg04.

Statistical checks use fixed seeds and a tolerance of 4.5 binomial standard deviations of the
quantity measured (computed from the expected value and the sample size), stated per test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits.analysis import sarg04 as theory
from qkd_circuits.analysis.keyrate import LinkParameters, key_rate
from qkd_circuits.exceptions import ConfigurationError

pytest.importorskip("qiskit")
from qkd_circuits.quantum.b92 import b92_from_record, run_b92, run_b92_usd_attack, usd_unitary  # noqa: E402
from qkd_circuits.quantum.models import Channel, InterceptResend  # noqa: E402
from qkd_circuits.quantum.sarg04 import (  # noqa: E402
    build_four_state_usd_circuit, build_stored_photon_circuit, draw_pairs, run_four_state_usd,
    run_sarg04, run_stored_photon_attack, sarg04_from_record,
)
from qkd_circuits.quantum.wcp import PhotonNumberSplitting, WeakCoherentSource, run_wcp_exchanges  # noqa: E402

SIGMAS = 4.5


def close(measured: float, expected: float, n: int) -> bool:
    """``measured`` within SIGMAS binomial standard deviations of ``expected`` over ``n`` trials."""
    return abs(measured - expected) <= SIGMAS * math.sqrt(max(expected * (1 - expected), 1e-12) / n)


# --- the theory's known answers ------------------------------------------------------------

def test_theory_known_answers():
    assert theory.sifted_fraction("bb84") == 0.5
    assert theory.sifted_fraction("b92") == theory.sifted_fraction("sarg04") == 0.25
    assert theory.sifted_fraction("sarg04", 0.2) == pytest.approx(0.3)
    assert theory.qber_depolarizing("bb84", 0.1) == pytest.approx(0.05)
    assert theory.qber_depolarizing("b92", 0.1) == theory.qber_depolarizing("sarg04", 0.1) == pytest.approx(1 / 11)
    assert theory.sarg04_qber_from_bb84(0.05) == pytest.approx(0.1 / 1.1)
    for e in (0.01, 0.05, 0.11):  # SARG04 errs more than BB84 on the same depolarizing channel
        assert theory.sarg04_qber_from_bb84(e) > e
    assert theory.qber_intercept_resend("bb84") == 0.25
    assert theory.qber_intercept_resend("sarg04") == pytest.approx(1 / 3)
    assert theory.qber_intercept_resend("b92", 0.5) == pytest.approx(0.2)
    # USD: four states on n photons (Gram least eigenvalue), a pair on k photons (1 - c^k)
    assert [theory.four_state_usd_probability(n) for n in range(1, 6)] == pytest.approx([0, 0, 0.5, 0.5, 0.75])
    assert np.linalg.matrix_rank(theory.four_state_gram(2)) == 3
    assert theory.pair_usd_probability(1) == pytest.approx(1 - 1 / math.sqrt(2))
    assert theory.pair_usd_probability(2) == pytest.approx(0.5)
    assert theory.usd_probability([[1, 0.5], [0.5, 1]]) == pytest.approx(0.5)


def test_pns_rate_bb84_is_gllp_at_zero_error():
    link = LinkParameters(y0=0.0, e_detector=0.0)
    for distance, mu in ((10, 0.05), (30, 0.01), (60, 0.003)):
        point = key_rate(distance, "gllp", link, mu=mu)
        assert theory.pns_rate("bb84", mu, point.eta).rate == pytest.approx(point.rate, rel=1e-9)


def test_pns_optimal_mu_scales_as_eta_for_bb84_and_sqrt_eta_for_sarg04():
    eta = 1e-5
    bb84, sarg = theory.optimal_pns_mu("bb84", eta), theory.optimal_pns_mu("sarg04", eta)
    # small-eta limits (module docstring): BB84 mu -> eta, R -> eta^2/4; SARG04 mu -> 2 sqrt(eta), R -> (sqrt2/6) eta^1.5
    assert bb84.mu / eta == pytest.approx(1.0, rel=0.01)
    assert bb84.rate / eta ** 2 == pytest.approx(0.25, rel=0.001)
    assert sarg.mu / math.sqrt(eta) == pytest.approx(2.0, rel=0.01)
    assert sarg.rate / eta ** 1.5 == pytest.approx(math.sqrt(2) / 6, rel=0.005)
    assert sarg.rate > 50 * bb84.rate
    # at the same mu: where BB84's multi-photon pulses cover Bob's clicks, SARG04 still has key
    b, s = theory.pns_rate("bb84", 0.1, 1e-2), theory.pns_rate("sarg04", 0.1, 1e-2)
    assert b.known_fraction == 1.0 and b.rate == 0.0
    assert 0 < s.known_fraction < 1 and s.rate > 0


def test_theory_misuse():
    with pytest.raises(ConfigurationError, match="protocol must be one of"):
        theory.sifted_fraction("e91")
    with pytest.raises(ConfigurationError, match="must be a probability"):
        theory.qber_depolarizing("b92", 1.5)
    with pytest.raises(ConfigurationError, match="mu must be a mean photon number"):
        theory.pns_rate("sarg04", 0.0, 0.1)
    with pytest.raises(ConfigurationError, match="eta must be a transmittance"):
        theory.pns_rate("bb84", 0.1, 2.0)
    with pytest.raises(ConfigurationError, match="stated for bb84 and sarg04"):
        theory.pns_rate("b92", 0.1, 0.1)
    with pytest.raises(ConfigurationError, match="copies must be a whole number"):
        theory.four_state_gram(0)
    with pytest.raises(ConfigurationError, match="square Hermitian"):
        theory.usd_probability([[1, 0.5]])


# --- B92 circuits --------------------------------------------------------------------------

def test_b92_sifting_depolarizing_and_intercept_resend_match_theory():
    n = 12000
    clean = run_b92(n, seed=3)
    assert close(clean.sifted_fraction, 0.25, n) and clean.qber == 0.0
    a, b = clean.sifted_keys()
    assert np.array_equal(a, b) and a.size == clean.conclusive.sum()
    p = 0.1
    noisy = run_b92(n, seed=4, channel=Channel(depolarizing=p))
    assert close(noisy.sifted_fraction, theory.sifted_fraction("b92", p), n)
    assert close(noisy.qber, theory.qber_depolarizing("b92", p), int(noisy.conclusive.sum()))
    for f in (1.0, 0.5):
        attacked = run_b92(n, seed=5, eve=InterceptResend(f))
        assert close(attacked.qber, theory.qber_intercept_resend("b92", f), int(attacked.conclusive.sum()))


def test_b92_unambiguous_discrimination_attack_is_invisible_but_lossy():
    n = 8000
    r = run_b92_usd_attack(n, seed=6)
    assert close(float(r.detected.mean()), 1 - 1 / math.sqrt(2), n)  # Bob sees a transmittance of 0.293
    assert r.qber == 0.0 and close(r.sifted_fraction, 0.25, int(r.detected.sum()))
    kept = r.conclusive
    assert np.array_equal(r.eve_bits[kept], r.alice_bits[kept])  # Eve knows every bit Bob keeps
    assert np.array_equal(r.eve_bits[r.eve_known], r.alice_bits[r.eve_known])  # never a wrong identification


def test_b92_misuse():
    rec = run_sarg04(16, seed=1).exchange  # a BB84-state record with bit-1 states
    with pytest.raises(ConfigurationError, match="alice_bits must be all 0"):
        b92_from_record(rec)
    with pytest.raises(ConfigurationError, match="exchanges must be a whole number"):
        run_b92_usd_attack(0)
    with pytest.raises(ConfigurationError, match="linearly dependent"):
        usd_unitary([[1, 0], [0, 1], [math.sqrt(0.5), math.sqrt(0.5)]])
    with pytest.raises(ConfigurationError, match="array of state vectors"):
        usd_unitary([[1, 0, 0]])


# --- SARG04 circuits -----------------------------------------------------------------------

def test_sarg04_sifting_and_qber_against_bb84_on_the_same_channel():
    n = 12000
    clean = run_sarg04(n, seed=7)
    assert close(clean.sifted_fraction, 0.25, n) and clean.qber == 0.0
    p = 0.1
    noisy = run_sarg04(n, seed=8, channel=Channel(depolarizing=p))
    assert close(noisy.sifted_fraction, theory.sifted_fraction("sarg04", p), n)
    assert close(noisy.qber, theory.qber_depolarizing("sarg04", p), int(noisy.conclusive.sum()))
    # BB84's sifting of the very same pulses sees p/2, and SARG04 2e/(1 + 2e) of it
    rec = noisy.exchange
    same = (rec.alice_bases == rec.bob_bases) & rec.detected
    e_bb84 = float(np.mean(rec.alice_bits[same] != rec.bob_results[same]))
    assert close(e_bb84, p / 2, int(same.sum()))
    assert noisy.qber > e_bb84 + 0.02
    assert close(noisy.qber, theory.sarg04_qber_from_bb84(p / 2), int(noisy.conclusive.sum()))
    attacked = run_sarg04(n, seed=9, eve=InterceptResend(1.0))
    assert close(attacked.qber, theory.qber_intercept_resend("sarg04"), int(attacked.conclusive.sum()))


def test_sarg04_on_weak_coherent_pulses_reuses_the_wcp_circuits():
    e_det = 0.03
    rec = run_wcp_exchanges(20000, source=WeakCoherentSource(), channel=Channel(misalignment=e_det, distance_km=10),
                            seed=7)
    s = sarg04_from_record(rec, draw_pairs(len(rec), seed=7))
    kept = int(s.conclusive.sum())
    assert close(s.qber, theory.sarg04_qber_from_bb84(e_det), kept)
    assert close(s.sifted_fraction, 0.25 + e_det / 2, int(s.detected.sum()))  # (1 + 2e)/4 per click


def test_a_two_photon_pulse_gives_eve_the_bb84_bit_but_no_unambiguous_sarg04_bit():
    # BB84: the photon Eve keeps from a multi-photon pulse, measured in the announced basis, is the bit.
    rec = run_wcp_exchanges(3000, source=WeakCoherentSource(), eve=PhotonNumberSplitting(), seed=11)
    two = rec.eve_active & (rec.photons == 2)
    assert two.sum() > 100 and np.array_equal(rec.eve_results[two], rec.alice_bits[two])
    # SARG04: the same kept photon after the pair announcement: the optimal error-free measurement
    # identifies it with probability 1 - 1/sqrt2 only; keeping both photons, 1/2.
    n = 6000
    for stored in (1, 2):
        attack = run_stored_photon_attack(n, stored=stored, seed=12 + stored)
        assert attack.errors == 0
        assert close(attack.known_fraction, theory.pair_usd_probability(stored), n)
    # Before the announcement, two photons of the four states admit no unambiguous measurement;
    # three do, and the optimal one succeeds half the time without error.
    with pytest.raises(ConfigurationError, match="linearly dependent \\(Gram rank 3\\)"):
        build_four_state_usd_circuit(2)
    three = run_four_state_usd(n, photons=3, seed=15)
    assert three.errors == 0 and close(three.known_fraction, theory.four_state_usd_probability(3), n)


def test_sarg04_misuse():
    rec = run_sarg04(8, seed=1).exchange
    with pytest.raises(ConfigurationError, match="pair_values must be 8 bits"):
        sarg04_from_record(rec, np.zeros(7, dtype=np.uint8))
    with pytest.raises(ConfigurationError, match="pair_values must be 8 bits"):
        sarg04_from_record(rec, np.full(8, 2))
    with pytest.raises(ConfigurationError, match="stored must be a whole number"):
        build_stored_photon_circuit(0)
    with pytest.raises(ConfigurationError, match="pulses must be a whole number"):
        run_four_state_usd(0)
    with pytest.raises(ConfigurationError, match="n must be a whole number"):
        draw_pairs(-1)


def test_records_hide_their_bits():
    r = run_sarg04(32, seed=2)
    assert repr(r) == "Sarg04Record(n=32, detected=32)"
    assert repr(run_b92(32, seed=2)) == "B92Record(n=32, detected=32)"


@pytest.mark.parametrize("backend", ["fake:nairobi", "braket-local"])
def test_the_usd_circuits_run_on_the_other_local_backends(backend):
    # The dilations are UnitaryGates: transpiled for a fake IBM device (its noise makes errors),
    # and exact on the Braket local simulator (no error, the expected success rates).
    n = 400
    usd4 = run_four_state_usd(n, photons=3, seed=21, backend=backend)
    attack = run_b92_usd_attack(n, seed=22, backend=backend)
    assert usd4.eve_known.shape == attack.detected.shape == (n,)
    if backend == "braket-local":
        assert usd4.errors == 0 and close(usd4.known_fraction, 0.5, n)
        assert attack.qber == 0.0 and close(float(attack.detected.mean()), 1 - 1 / math.sqrt(2), n)
    else:  # a noisy device: errors appear, but most identifications still hold
        assert 0 < usd4.errors < 0.5 * usd4.eve_known.sum()
